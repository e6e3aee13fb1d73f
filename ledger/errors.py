"""Errors the ledger's commands raise for the caller to report (never a crash)."""


class Conflict(Exception):
    """The command conflicts with what is recorded (duplicate name, reused key...)."""


class NotFound(Exception):
    pass
