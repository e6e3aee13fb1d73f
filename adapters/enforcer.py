"""The enforcer: follows the ledger and tells NASes to throttle or cut off subscribers when a
prepaid balance runs out, a postpaid credit limit is passed, a fair-use cap is crossed or an
account is suspended; and to lift it again (payment, new billing period, resumption).

It acts only on events the read models already include (it reads balances and open sessions
from them), sends CoA / Disconnect-Request (RFC 5176), and records what it decided and what
each NAS answered (ACK, NAK, timeout) as an event on the account, in the same transaction as
its position in the ledger log. A crash re-decides from the recorded state: at most a
repeated CoA, never a missed one."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking
from sqlalchemy import Engine, select

from domain.enforcement import BLOCK, THROTTLE, Decision, balance_decision, rate_limit_attributes
from domain.plans import version_in_force
from ledger import Ledger
from ledger.account import Account
from ledger.bulk import load_aggregates
from projections import ReadModelProjector
from projections import tables as t
from projections.base import chunks

from .radius.coa import CoaClient, CoaResult

log = logging.getLogger(__name__)

NAME = "enforcer"


@dataclass
class _Triggers:
    check: bool = False
    fair_use: Decision | None = None
    period_reset: bool = False
    new_sessions: bool = False


class Enforcer:
    def __init__(self, ledger: Ledger, engine: Engine, projector: ReadModelProjector,
                 coa: CoaClient | None = None) -> None:
        self.ledger = ledger
        self.engine = engine
        self.projector = projector
        self.coa = coa or CoaClient()

    def step(self) -> int:
        position = self.ledger.tracked_position(NAME)
        projected = self.projector.position()
        if projected <= position:
            return 0
        notifications = self.ledger.recorder.select_notifications(start=position + 1, limit=500, stop=projected)
        if not notifications:
            return 0
        triggers: dict[UUID, _Triggers] = {}
        for notification in notifications:
            self._classify(self.ledger.mapper.to_domain_event(notification), triggers)
        for _ in range(5):  # an admin write to the same account may race us: re-decide
            try:
                self._enforce(triggers, Tracking(NAME, notifications[-1].id))
                break
            except IntegrityError:
                continue
        else:
            raise RuntimeError("could not record enforcement after 5 attempts")
        return len(notifications)

    def _classify(self, event: Any, triggers: dict[UUID, _Triggers]) -> None:
        name = type(event).__qualname__
        if name == "BillingPeriod.FairUseCapReached":
            rate = event.throttle_rate if event.action == THROTTLE else ""
            triggers.setdefault(event.account_id, _Triggers()).fair_use = Decision(event.action, "fair-use", rate)
        elif name == "BillingPeriod.Opened":
            triggers.setdefault(event.account_id, _Triggers()).period_reset = True
        elif name in ("BillingPeriod.UsageRated", "Payment.Received"):
            triggers.setdefault(event.account_id, _Triggers()).check = True
        elif name in ("Account.AddonPurchased", "Account.Suspended", "Account.Resumed", "Account.PlanChanged",
                      "Account.BillingSettingsChanged", "Account.Terminated"):
            triggers.setdefault(event.originator_id, _Triggers()).check = True
        elif name == "Session.RecordApplied" and event.opened and event.account_id is not None:
            triggers.setdefault(event.account_id, _Triggers()).new_sessions = True

    def _desired(self, account: Account, trigger: _Triggers, receivables: dict[str, Decimal],
                 plans: dict[UUID, Any]) -> Decision | None:
        if account.status in ("suspended", "terminated"):
            return Decision(BLOCK, account.status)
        at = int(time.time())
        plan_id = account.plan_at(at)
        if plan_id not in plans:
            plans[plan_id] = self.ledger.get_plan(plan_id).plan_versions()
        terms = version_in_force(plans[plan_id], at).terms
        credit = -receivables.get(str(account.id), Decimal(0))
        by_balance = balance_decision(terms.payment_model, credit, account.credit_limit)
        if by_balance is not None:
            return by_balance
        if trigger.fair_use is not None:
            return trigger.fair_use
        current = account.enforcement
        if current and current["reason"] == "fair-use" and not trigger.period_reset:
            return Decision(current["action"], "fair-use", current.get("rate", ""))
        return None

    def _enforce(self, triggers: dict[UUID, _Triggers], tracking: Tracking) -> None:
        changed: list[Account] = []
        # The batch's accounts and balances in a few queries, and each plan once: one
        # repository read and one balance query per account took a fifth of `serve`'s CPU.
        accounts = load_aggregates(self.ledger, Account, triggers)
        receivables = self._receivables([str(account_id) for account_id in accounts])
        plans: dict[UUID, Any] = {}
        for account_id, trigger in triggers.items():
            account = accounts.get(account_id)
            if account is None:
                continue
            desired = self._desired(account, trigger, receivables, plans)
            current = account.enforcement
            now = int(time.time())
            if desired is not None and (current is None or current["action"] != desired.action
                                        or current.get("rate", "") != desired.rate):
                results = self._apply(account, desired)
                account.enforcement_applied(at=now, action=desired.action, reason=desired.reason,
                                            rate=desired.rate, results=results)
                changed.append(account)
            elif desired is not None and trigger.new_sessions:
                results = self._apply(account, desired)  # a session opened while enforced
                account.enforcement_applied(at=now, action=desired.action, reason=desired.reason,
                                            rate=desired.rate, results=results)
                changed.append(account)
            elif desired is None and current is not None:
                results = self._lift(account, current)
                account.enforcement_lifted(at=now, reason="resolved", results=results)
                changed.append(account)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
        processing_event.collect_events(*changed)
        recordings = self.ledger._record(processing_event)
        self.ledger._notify(recordings)

    def _receivables(self, account_ids: list[str]) -> dict[str, Decimal]:
        """What each account owes (its receivable balance), for those with a balance row."""
        found: dict[str, Decimal] = {}
        with self.engine.connect() as conn:
            for ids in chunks(account_ids):
                query = select(t.balances.c.account_id, t.balances.c.receivable).where(
                    t.balances.c.account_id.in_(ids))
                found |= {row.account_id: Decimal(row.receivable) for row in conn.execute(query)}
        return found

    # ---- talking to the NASes ----------------------------------------------------------

    def _open_sessions(self, account_id: UUID) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = (select(t.sessions, t.nas.c.address, t.nas.c.secret, t.nas.c.vendor, t.nas.c.coa_port)
                     .join(t.nas, t.nas.c.id == t.sessions.c.nas_id)
                     .where(t.sessions.c.account_id == str(account_id), t.sessions.c.stopped_at.is_(None)))
            return [dict(row) for row in conn.execute(query).mappings()]

    @staticmethod
    def _session_attributes(session: dict[str, Any]) -> list[tuple[str, str | int]]:
        attributes: list[tuple[str, str | int]] = [("Acct-Session-Id", session["acct_session_id"])]
        if session["username"]:
            attributes.append(("User-Name", session["username"]))
        if session["framed_ip"]:
            attributes.append(("Framed-IP-Address", session["framed_ip"]))
        return attributes

    @staticmethod
    def _target(session: dict[str, Any]) -> str:
        # A NAS registered by subnet is reached at the address it reported (NAS-IP-Address).
        address = str(session["address"]).split("/")[0]
        return session["nas_ip"] or address

    def _result(self, session: dict[str, Any], action: str, result: CoaResult) -> dict[str, str]:
        log.info("%s session %s on %s: %s %s", action, session["acct_session_id"], self._target(session),
                 result.outcome, result.error_cause)
        return {"session": session["id"], "nas": self._target(session), "action": action} | result.to_dict()

    def _apply(self, account: Account, decision: Decision) -> list[dict[str, str]]:
        results = []
        for session in self._open_sessions(account.id):
            secret = str(session["secret"]).encode()
            if decision.action == THROTTLE:
                try:
                    changes = rate_limit_attributes(session["vendor"], decision.rate)
                except ValueError as error:
                    results.append({"session": session["id"], "action": "coa", "outcome": "skipped",
                                    "error_cause": str(error), "attempts": "0"})
                    continue
                outcome = self.coa.change(self._target(session), session["coa_port"], secret,
                                          self._session_attributes(session), changes)
                results.append(self._result(session, "coa", outcome))
            else:
                outcome = self.coa.disconnect(self._target(session), session["coa_port"], secret,
                                              self._session_attributes(session))
                results.append(self._result(session, "disconnect", outcome))
        return results

    def _lift(self, account: Account, current: dict[str, Any]) -> list[dict[str, str]]:
        """A throttle is lifted by a CoA restoring the plan's rate limit; a cut-off needs
        nothing sent: the subscriber reconnects and the AAA server admits them again."""
        if current["action"] != THROTTLE:
            return []
        at = int(time.time())
        terms = version_in_force(self.ledger.get_plan(account.plan_at(at)).plan_versions(), at).terms
        if not terms.rate_limit:
            return []
        results = []
        for session in self._open_sessions(account.id):
            try:
                changes = rate_limit_attributes(session["vendor"], terms.rate_limit)
            except ValueError:
                continue
            outcome = self.coa.change(self._target(session), session["coa_port"], str(session["secret"]).encode(),
                                      self._session_attributes(session), changes)
            results.append(self._result(session, "coa", outcome))
        return results
