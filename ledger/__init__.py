"""Event-sourced aggregates and applications: the system of record."""

from .application import Ledger
from .errors import Conflict, NotFound
from .intake import AccountingLog

__all__ = ["AccountingLog", "Conflict", "Ledger", "NotFound"]
