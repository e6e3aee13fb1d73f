"""Read model of what operators configure: NAS, plans, accounts, usernames, API tokens."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Table, insert, select, update

from . import tables as t
from .base import ModelBatch, ReadModel


class _CatalogBatch(ModelBatch):
    """New rows wait in memory and are written with one executemany per table at ``flush``
    (thousands of accounts are opened in one batch by a bulk load or a rebuild); a change to
    a row still waiting is made in memory, a change to a stored row is written at once."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.new: dict[Table, dict[str, dict[str, Any]]] = {
            t.nas: {}, t.plans: {}, t.accounts: {}, t.usernames: {}, t.api_tokens: {}}

    def _insert(self, table: Table, key: str, row: dict[str, Any]) -> None:
        pending = self.new[table]
        if key in pending:  # the same key twice fails as the database would have
            self.flush()
        pending[key] = row

    def _update(self, table: Table, key: str, **values: Any) -> None:
        row = self.new[table].get(key)
        if row is not None:
            row.update(values)
        else:
            self.conn.execute(update(table).where(table.c.id == key).values(**values))

    def on_Nas_Registered(self, position: int, e: Any) -> None:
        self._insert(t.nas, str(e.originator_id), dict(
            id=str(e.originator_id), address=e.address, name=e.name, secret=e.secret, vendor=e.vendor,
            require_message_authenticator=e.require_message_authenticator, site=e.site,
            coa_port=e.coa_port, retired=False))

    def on_Nas_Retired(self, position: int, e: Any) -> None:
        self._update(t.nas, str(e.originator_id), retired=True)

    def on_Plan_Created(self, position: int, e: Any) -> None:
        versions = [{"effective_from": e.effective_from, "terms": e.terms}]
        self._insert(t.plans, str(e.originator_id), dict(
            id=str(e.originator_id), name=e.name, currency=e.terms["currency"], versions=json.dumps(versions)))

    def on_Plan_Revised(self, position: int, e: Any) -> None:
        plan_id = str(e.originator_id)
        pending = self.new[t.plans].get(plan_id)
        if pending is not None:
            row = pending["versions"]
        else:
            row = self.conn.execute(select(t.plans.c.versions).where(t.plans.c.id == plan_id)).scalar()
        versions = json.loads(row or "[]") + [{"effective_from": e.effective_from, "terms": e.terms}]
        self._update(t.plans, plan_id, versions=json.dumps(versions))

    def on_Account_Opened(self, position: int, e: Any) -> None:
        self._insert(t.accounts, str(e.originator_id), dict(
            id=str(e.originator_id), name=e.name, plan_id=str(e.plan_id), currency=e.currency, status="active",
            opened_at=e.opened_at, usernames=json.dumps(e.usernames)))

    def on_Account_PlanChanged(self, position: int, e: Any) -> None:
        self._update(t.accounts, str(e.originator_id), plan_id=str(e.plan_id))

    def on_UsernameClaim_Claimed(self, position: int, e: Any) -> None:
        self._insert(t.usernames, e.username, dict(username=e.username, account_id=str(e.account_id)))

    def on_ApiToken_Issued(self, position: int, e: Any) -> None:
        self._insert(t.api_tokens, str(e.originator_id), dict(
            id=str(e.originator_id), hashed=e.hashed, role=e.role,
            account_id=str(e.account_id) if e.account_id else None, label=e.label, revoked=False))

    def on_ApiToken_Revoked(self, position: int, e: Any) -> None:
        self._update(t.api_tokens, str(e.originator_id), revoked=True)

    def flush(self) -> None:
        for table, rows in self.new.items():
            if rows:
                self.conn.execute(insert(table), list(rows.values()))
                self.new[table] = {}


class CatalogModel(ReadModel):
    name = "catalog"
    tables = (t.nas, t.plans, t.accounts, t.usernames, t.api_tokens)
    batch_class = _CatalogBatch
