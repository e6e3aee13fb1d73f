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
from domain.plans import PlanTerms, PlanVersion, version_in_force
from ledger import Ledger
from ledger.account import Account
from ledger.bulk import load_aggregates
from projections import ReadModelProjector
from projections import tables as t
from projections.base import chunks

from .enforcement_triggers import BatchTriggers, TriggerReader, Triggers, watched_rows
from .radius.coa import CoaClient, CoaResult

log = logging.getLogger(__name__)

NAME = "enforcer"
BATCH = 500  # watched notifications per step


def balance_matters(payment_model: str, credit_limit: Decimal) -> bool:
    """Whether domain.enforcement.balance_decision can decide anything for an account on these
    terms: prepaid (cut off at zero credit) or postpaid with a credit limit. A postpaid account
    without one is never cut off for its balance (so its balance need not be read)."""
    return payment_model == "prepaid" or credit_limit > 0


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What an enforcement decision reads from an account, as of one version of it."""

    version: int
    status: str
    plans: tuple[tuple[int, UUID], ...]  # (effective_from, plan_id), as Account.plans
    credit_limit: Decimal
    enforcement: tuple[str, str, str] | None  # (action, reason, rate) in force

    @classmethod
    def of(cls, account: Account, interned: dict[Any, Any] | None = None) -> AccountFacts:
        plans = tuple((int(p["effective_from"]), UUID(str(p["plan_id"]))) for p in account.plans)
        if interned is not None:  # most accounts share one plan history: keep one copy of it
            plans = interned.setdefault(plans, plans)
        current = account.enforcement
        enforcement = None if current is None else (current["action"], current["reason"], current.get("rate", ""))
        return cls(account.version, account.status, plans, account.credit_limit, enforcement)

    def plan_at(self, at: int) -> UUID:
        """The plan in force at ``at`` (Account.plan_at's rule)."""
        chosen = self.plans[0][1]
        for effective_from, plan_id in self.plans:
            if effective_from <= at:
                chosen = plan_id
        return chosen


class Enforcer:
    """Follows the projected ledger log (see the module's docstring).

    It keeps each account's `AccountFacts` between batches, so an account that cannot be acted
    on (active, nothing in force, no fair-use cap reached, postpaid without a credit limit) is
    passed over without reading it or its balance. The cache is kept true by the log itself:
    the enforcer reads every Account event in log order and forgets an account's facts when an
    event newer than them goes by; facts are read from the store (current, so never older than
    the log position), and an account is read again before anything is sent or recorded for
    it. It is dropped when the tracked position moves under it (a rewind, another enforcer)
    and when the ledger forgets its cached aggregates (promotion, fencing)."""

    cache_limit = 200_000  # accounts' facts kept; beyond that the cache starts over
    record_interval = 1.0  # seconds

    def __init__(self, ledger: Ledger, engine: Engine, projector: ReadModelProjector,
                 coa: CoaClient | None = None) -> None:
        self.ledger = ledger
        self.engine = engine
        self.projector = projector
        self.coa = coa or CoaClient()
        self.reader = TriggerReader(ledger.mapper)
        self.facts: dict[str, AccountFacts | None] = {}  # by account id hex; None: no such account
        self.plans: dict[UUID, list[PlanVersion]] = {}
        self.interned: dict[Any, Any] = {}
        # Where it has read to, and what it last recorded (-1: nothing yet). A batch that decides
        # nothing does not have to record its position at once: after a crash, re-deciding it
        # changes nothing (at most a repeated CoA to a session opened while enforced), so the
        # position alone is recorded at most every `record_interval` seconds, not each batch.
        self.position = self.recorded = -1
        self.recorded_at = time.monotonic()
        self.stale = False
        # Another thread (a site's fencing, a failed rater batch) may ask: the cache is
        # dropped at the start of the next step, never under a running one.
        ledger.forget_listeners.append(self.forget)

    def forget(self) -> None:
        """Drop everything cached before the next step (the log may no longer hold what it
        was read from)."""
        self.stale = True

    def step(self) -> int:
        recorded = self.ledger.tracked_position(NAME)
        if recorded != self.recorded or self.stale:
            # Moved under us (a rewind, another enforcer), or asked to: start over from the
            # recorded position with nothing cached.
            self.stale = False
            self.facts.clear()
            self.plans.clear()
            self.interned.clear()
            self.recorded = self.position = recorded
        position = self.position
        projected = self.projector.position()
        if projected <= position:
            return 0
        rows = watched_rows(self.ledger.recorder, position + 1, projected, BATCH)
        upto = rows[-1].id if len(rows) == BATCH else projected
        batch = self.reader.read(rows)
        self._forget_changed(batch)
        for _ in range(5):  # an admin write to the same account may race us: re-decide
            try:
                if self._enforce(batch.accounts, Tracking(NAME, upto)):
                    self.recorded, self.recorded_at = upto, time.monotonic()
                break
            except IntegrityError:
                self.facts.clear()
                continue
        else:
            raise RuntimeError("could not record enforcement after 5 attempts")
        self.position = upto
        return upto - position

    def _forget_changed(self, batch: BatchTriggers) -> None:
        for account, version in batch.changed_accounts:
            if account in self.facts:
                facts = self.facts[account]
                if facts is None or facts.version < version:
                    del self.facts[account]
        for plan_id in batch.changed_plans:
            self.plans.pop(plan_id, None)

    def _load_facts(self, accounts: list[str]) -> None:
        if len(self.facts) + len(accounts) > self.cache_limit:
            self.facts.clear()
            self.interned.clear()
        found = load_aggregates(self.ledger, Account, [UUID(hex=account) for account in accounts])
        for account in accounts:
            aggregate = found.get(UUID(hex=account))
            self.facts[account] = None if aggregate is None else AccountFacts.of(aggregate, self.interned)

    def _terms(self, facts: AccountFacts, at: int) -> PlanTerms:
        plan_id = facts.plan_at(at)
        versions = self.plans.get(plan_id)
        if versions is None:
            versions = self.plans[plan_id] = self.ledger.get_plan(plan_id).plan_versions()
        return version_in_force(versions, at).terms

    def _settled(self, facts: AccountFacts, trigger: Triggers, at: int) -> bool:
        """Nothing in force and nothing that could be decided: _desired would say None."""
        return (facts.status not in ("suspended", "terminated") and facts.enforcement is None
                and trigger.fair_use is None
                and not balance_matters(self._terms(facts, at).payment_model, facts.credit_limit))

    def _desired(self, facts: AccountFacts, trigger: Triggers, credit: Decimal, at: int) -> Decision | None:
        if facts.status in ("suspended", "terminated"):
            return Decision(BLOCK, facts.status)
        terms = self._terms(facts, at)
        by_balance = balance_decision(terms.payment_model, credit, facts.credit_limit)
        if by_balance is not None:
            return by_balance
        if trigger.fair_use is not None:
            return trigger.fair_use
        current = facts.enforcement
        if current and current[1] == "fair-use" and not trigger.period_reset:
            return Decision(current[0], "fair-use", current[2])
        return None

    @staticmethod
    def _change(current: tuple[str, str, str] | None, desired: Decision | None, trigger: Triggers) -> str:
        """What to do: "apply" the desired decision, "lift" the one in force, or ""."""
        if desired is not None and (current is None or current[0] != desired.action or current[2] != desired.rate):
            return "apply"
        if desired is not None and trigger.new_sessions:
            return "apply"  # a session opened while enforced
        if desired is None and current is not None:
            return "lift"
        return ""

    def _enforce(self, triggers: dict[str, Triggers], tracking: Tracking) -> bool:
        """Decide and act for the batch; True when its position was recorded (always with a
        decision; alone, when `record_interval` has passed)."""
        now = int(time.time())
        missing = [account for account in triggers if account not in self.facts]
        if missing:
            self._load_facts(missing)
        candidates: dict[str, AccountFacts] = {}
        for account, trigger in triggers.items():
            facts = self.facts.get(account)
            if facts is not None and not self._settled(facts, trigger, now):
                candidates[account] = facts
        # Decided on the cached facts and the projected balances; an account to act on is read
        # again and decided on its current state, as what is recorded must follow from it.
        receivables = self._receivables([str(UUID(hex=account)) for account in candidates]) if candidates else {}
        to_act = [UUID(hex=account) for account, facts in candidates.items()
                  if self._change(facts.enforcement, self._desired(facts, triggers[account],
                                                                   -receivables.get(account, Decimal(0)), now),
                                  triggers[account])]
        changed: list[Account] = []
        for aggregate in load_aggregates(self.ledger, Account, to_act).values() if to_act else ():
            facts = AccountFacts.of(aggregate)
            trigger = triggers[aggregate.id.hex]
            desired = self._desired(facts, trigger, -receivables.get(aggregate.id.hex, Decimal(0)), now)
            change = self._change(facts.enforcement, desired, trigger)
            if change == "apply":
                assert desired is not None
                results = self._apply(aggregate, desired)
                aggregate.enforcement_applied(at=now, action=desired.action, reason=desired.reason,
                                              rate=desired.rate, results=results)
                changed.append(aggregate)
            elif change == "lift":
                assert aggregate.enforcement is not None
                results = self._lift(aggregate, aggregate.enforcement)
                aggregate.enforcement_lifted(at=now, reason="resolved", results=results)
                changed.append(aggregate)
        if not changed and time.monotonic() - self.recorded_at < self.record_interval:
            return False
        processing_event: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
        processing_event.collect_events(*changed)
        recordings = self.ledger._record(processing_event)
        for aggregate in changed:
            self.facts[aggregate.id.hex] = AccountFacts.of(aggregate, self.interned)
        self.ledger._notify(recordings)
        return True

    def _receivables(self, account_ids: list[str]) -> dict[str, Decimal]:
        """What each account owes (its receivable balance), by account id hex, for those with
        a balance row."""
        found: dict[str, Decimal] = {}
        with self.engine.connect() as conn:
            for ids in chunks(account_ids):
                query = select(t.balances.c.account_id, t.balances.c.receivable).where(
                    t.balances.c.account_id.in_(ids))
                found |= {UUID(row.account_id).hex: Decimal(row.receivable) for row in conn.execute(query)}
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
        terms = self._terms(AccountFacts.of(account), int(time.time()))
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
