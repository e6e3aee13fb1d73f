"""Read model of what operators configure: NAS, plans, accounts, usernames, API tokens."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update

from . import tables as t
from .base import ModelBatch, ReadModel


class _CatalogBatch(ModelBatch):
    def on_Nas_Registered(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.nas).values(
            id=str(e.originator_id), address=e.address, name=e.name, secret=e.secret, vendor=e.vendor,
            require_message_authenticator=e.require_message_authenticator, site=e.site,
            coa_port=e.coa_port, retired=False))

    def on_Nas_Retired(self, position: int, e: Any) -> None:
        self.conn.execute(update(t.nas).where(t.nas.c.id == str(e.originator_id)).values(retired=True))

    def on_Plan_Created(self, position: int, e: Any) -> None:
        versions = [{"effective_from": e.effective_from, "terms": e.terms}]
        self.conn.execute(insert(t.plans).values(
            id=str(e.originator_id), name=e.name, currency=e.terms["currency"], versions=json.dumps(versions)))

    def on_Plan_Revised(self, position: int, e: Any) -> None:
        row = self.conn.execute(select(t.plans.c.versions).where(t.plans.c.id == str(e.originator_id))).scalar()
        versions = json.loads(row or "[]") + [{"effective_from": e.effective_from, "terms": e.terms}]
        self.conn.execute(update(t.plans).where(t.plans.c.id == str(e.originator_id))
                          .values(versions=json.dumps(versions)))

    def on_Account_Opened(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.accounts).values(
            id=str(e.originator_id), name=e.name, plan_id=str(e.plan_id), currency=e.currency, status="active",
            opened_at=e.opened_at, usernames=json.dumps(e.usernames)))

    def on_Account_PlanChanged(self, position: int, e: Any) -> None:
        self.conn.execute(update(t.accounts).where(t.accounts.c.id == str(e.originator_id))
                          .values(plan_id=str(e.plan_id)))

    def on_UsernameClaim_Claimed(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.usernames).values(username=e.username, account_id=str(e.account_id)))

    def on_ApiToken_Issued(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.api_tokens).values(
            id=str(e.originator_id), hashed=e.hashed, role=e.role,
            account_id=str(e.account_id) if e.account_id else None, label=e.label, revoked=False))

    def on_ApiToken_Revoked(self, position: int, e: Any) -> None:
        self.conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == str(e.originator_id))
                          .values(revoked=True))


class CatalogModel(ReadModel):
    name = "catalog"
    tables = (t.nas, t.plans, t.accounts, t.usernames, t.api_tokens)
    batch_class = _CatalogBatch
