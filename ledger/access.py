"""API tokens as events: issued and revoked tokens are audited and replicate to the standby
site, so a promoted site accepts the same credentials. Only a hash is ever stored."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.ids import NAMESPACE

# "replication": the other site of a two-site deployment pulls the log and re-submits records.
ROLES = ("admin", "finance", "auditor", "portal", "replication")


def token_hash(token: str) -> str:
    # Tokens are 256-bit random values, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(Aggregate):
    @staticmethod
    def create_id(hashed: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE, f"token:{hashed}")

    @event("Issued")
    def __init__(self, hashed: str, role: str, account_id: UUID | None, label: str, issued_at: int) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if (role == "portal") != (account_id is not None):
            raise ValueError("portal tokens, and only they, are scoped to one account")
        self.hashed = hashed
        self.role = role
        self.account_id = account_id
        self.label = label
        self.revoked = False

    @event("Revoked")
    def revoke(self) -> None:
        self.revoked = True
