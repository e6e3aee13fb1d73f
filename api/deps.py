"""Dependencies: the runtime, the caller's principal and role checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.access import ApiToken, token_hash
from projections import queries

from .bootstrap import Runtime

bearer = HTTPBearer(auto_error=False)


# The dependencies are coroutines: FastAPI runs a plain function dependency in its thread
# pool, a hand-off to another thread and back per dependency per request (with the
# interpreter lock passed each way); they do no more than an indexed read of the read models.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@dataclass(frozen=True)
class Principal:
    role: str
    account_id: str | None

    def may_read_account(self, account_id: str) -> bool:
        if self.role == "portal":
            return self.account_id == account_id
        return self.role in ("admin", "finance", "auditor")


async def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    unauthorized = HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise unauthorized
    hashed = token_hash(credentials.credentials)
    row = queries.token(runtime.engine, hashed)
    if row is None:
        # Issued a moment ago by another process and not projected yet: the event store
        # is the authority (the token's aggregate id derives from its hash).
        found = runtime.ledger._maybe_get(ApiToken, ApiToken.create_id(hashed))
        if found is None:
            raise unauthorized
        row = {"role": found.role, "account_id": str(found.account_id) if found.account_id else None,
               "revoked": found.revoked}
    if row["revoked"]:
        raise unauthorized
    return Principal(role=row["role"], account_id=row["account_id"])


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: str):  # type: ignore[no-untyped-def]
    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise HTTPException(403, f"this needs one of the roles: {', '.join(roles)}")
        return principal

    return Depends(check)


async def account_reader(account_id: UUID, principal: PrincipalDep) -> str:
    """The account path parameter, if the caller may read it (portal tokens: only their own)."""
    key = str(account_id)
    if not principal.may_read_account(key):
        # Same answer as a missing account, so a portal token cannot probe for ids.
        raise HTTPException(404, f"no account {key}")
    return key


ReadableAccount = Annotated[str, Depends(account_reader)]
