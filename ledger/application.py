"""The Ledger: the event-sourced system of record for NAS, plans, accounts, payments,
tokens and sessions. Admin commands come from the API; accounting records come from the
accounting log (embedded) or Kafka (distributed) and are applied in batches, each batch
recorded atomically with the upstream position it consumed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Recording, Tracking

from domain.accounting import AccountingRecord
from domain.ids import username_id
from domain.money import minor_unit
from domain.plans import PlanTerms, PlanVersion, version_in_force

from .access import ApiToken, token_hash
from .account import Account, Payment, UsernameClaim, payment_postings
from .catalog import Nas, Plan
from .nas_sessions import NasSessions
from .session import Session
from .tariff import Tariff

A = TypeVar("A", bound=Aggregate)


class Conflict(Exception):
    """The command conflicts with what is recorded (duplicate name, reused key...)."""


class NotFound(Exception):
    pass


class Ledger(Application[UUID]):
    snapshotting_intervals = {Session: 100, NasSessions: 200}

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        # The rater is the only writer of Session and NasSessions aggregates (per partition
        # in the distributed mode), so it keeps them in memory between batches; any failed
        # batch or partition reassignment forgets them.
        self.live_sessions: dict[UUID, Aggregate] = {}
        self.live_sessions_limit = 50_000
        self.listeners: list[Callable[[], None]] = []

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        """Wake whoever follows this log (the projector) after each commit."""
        super()._notify(recordings)
        for listener in self.listeners:
            listener()

    def construct_recorder(self) -> ProcessRecorder:
        recorder = self.factory.process_recorder()
        assert isinstance(recorder, ProcessRecorder)
        return recorder

    # ---- admin commands -------------------------------------------------------------

    def register_nas(
        self, *, address: str, name: str, secret: str, vendor: str = "generic",
        require_message_authenticator: bool = False, site: str = "",
    ) -> Nas:
        nas = Nas(
            address=address, name=name, secret=secret, vendor=vendor,
            require_message_authenticator=require_message_authenticator, site=site,
        )
        self._save_new(nas, conflict=f"a NAS with address {address} is already registered")
        return nas

    def create_plan(self, *, name: str, terms: PlanTerms, effective_from: int) -> Plan:
        plan = Plan(name=name, terms=terms.to_dict(), effective_from=effective_from)
        self.save(plan)
        return plan

    def open_account(self, *, name: str, plan_id: UUID, usernames: list[str], opened_at: int) -> Account:
        plan = self.get_plan(plan_id)
        cleaned = [u.strip() for u in usernames]
        if any(not u for u in cleaned) or len({u.casefold() for u in cleaned}) != len(cleaned):
            raise ValueError("usernames must be non-empty and distinct")
        account = Account(
            name=name, plan_id=plan_id, currency=plan.currency, usernames=cleaned, opened_at=opened_at
        )
        claims = [UsernameClaim(username=u, account_id=account.id) for u in cleaned]
        self._save_new(account, *claims, conflict="a username is already claimed by another account")
        return account

    def record_payment(
        self, *, idempotency_key: str, account_id: UUID, amount: Decimal, currency: str,
        method: str, reference: str, received_at: int,
    ) -> tuple[Payment, bool]:
        """Returns (payment, created). Same key and same body: the recorded payment."""
        account = self.get_account(account_id)
        if currency != account.currency:
            raise ValueError(f"account is billed in {account.currency}, not {currency}")
        if amount <= 0:
            raise ValueError("a payment amount must be positive")
        if amount != amount.quantize(minor_unit(currency)):
            raise ValueError(f"{currency} amounts have at most {minor_unit(currency)} precision")
        body = {"account_id": str(account_id), "amount": str(amount), "currency": currency,
                "method": method, "reference": reference}
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        existing = self._maybe_get(Payment, Payment.create_id(idempotency_key))
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise Conflict("idempotency key already used for a different payment")
            return existing, False
        payment = Payment(
            idempotency_key=idempotency_key, fingerprint=fingerprint, account_id=account_id,
            amount=amount, currency=currency, method=method, reference=reference,
            received_at=received_at, postings=payment_postings(account_id, amount, currency),
        )
        try:
            self.save(payment)
        except IntegrityError:  # a concurrent retry won the race: answer as it did
            return self.record_payment(
                idempotency_key=idempotency_key, account_id=account_id, amount=amount,
                currency=currency, method=method, reference=reference, received_at=received_at,
            )
        return payment, True

    def issue_token(self, *, token: str, role: str, account_id: UUID | None, label: str, issued_at: int) -> ApiToken:
        if account_id is not None:
            self.get_account(account_id)
        api_token = ApiToken(hashed=token_hash(token), role=role, account_id=account_id,
                             label=label, issued_at=issued_at)
        self.save(api_token)
        return api_token

    # ---- queries on aggregates --------------------------------------------------------

    def get_plan(self, plan_id: UUID) -> Plan:
        return self._get(Plan, plan_id, "plan")

    def get_account(self, account_id: UUID) -> Account:
        return self._get(Account, account_id, "account")

    def tariff_for(self, username: str, at: int) -> Tariff | None:
        """The account and plan version pricing ``username``'s usage at ``at``; None when
        the username belongs to no account (the usage is kept on the session, unrated)."""
        return _Pricing(self).tariff(username, at)

    # ---- applying accounting records ---------------------------------------------------

    def apply_records(
        self, records: list[AccountingRecord], tracking: Tracking | None, *, shard: str = "",
    ) -> list[Recording[UUID]]:
        """Apply a batch of records and record the new events together with ``tracking``
        (the upstream position of the last record) in one transaction. ``shard`` names the
        accounting-log partition the records come from (distributed mode): NAS-wide state
        (the open-session registry) is kept per shard, so raters never contend on it."""
        batch = _Batch(self, shard)
        try:
            for record in records:
                batch.apply(record)
            processing_event: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
            processing_event.collect_events(*batch.touched.values())
            recordings = self._record(processing_event)
        except BaseException:
            self.forget_live_sessions()
            raise
        if len(self.live_sessions) + len(batch.touched) > self.live_sessions_limit:
            self.live_sessions.clear()
        self.live_sessions.update(batch.touched)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def forget_live_sessions(self) -> None:
        self.live_sessions.clear()

    def tracked_position(self, upstream: str) -> int:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder.max_tracking_id(upstream) or 0

    # ---- helpers ----------------------------------------------------------------------

    def _get(self, cls: type[A], aggregate_id: UUID, what: str) -> A:
        found = self._maybe_get(cls, aggregate_id)
        if found is None:
            raise NotFound(f"no {what} {aggregate_id}")
        return found

    def _maybe_get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    def _save_new(self, *aggregates: Aggregate, conflict: str) -> None:
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise Conflict(conflict) from None


class _Pricing:
    """Resolves username -> account -> plan version, loading each aggregate once."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.accounts: dict[str, Account | None] = {}
        self.plans: dict[UUID, list[PlanVersion]] = {}

    def tariff(self, username: str, at: int) -> Tariff | None:
        if not username:
            return None
        if username not in self.accounts:
            claim = self.ledger._maybe_get(UsernameClaim, username_id(username))
            self.accounts[username] = None if claim is None else self.ledger.get_account(claim.account_id)
        account = self.accounts[username]
        if account is None:
            return None
        plan_id = account.plan_at(at)
        if plan_id not in self.plans:
            self.plans[plan_id] = self.ledger.get_plan(plan_id).plan_versions()
        version = version_in_force(self.plans[plan_id], at)
        return Tariff(account_id=account.id, plan_id=plan_id, terms=version.terms)


class _Batch:
    """Aggregates loaded once per batch, so several records of a session in one batch
    apply to the same object and are saved together."""

    def __init__(self, ledger: Ledger, shard: str = "") -> None:
        self.ledger = ledger
        self.shard = shard
        self.touched: dict[UUID, Aggregate] = {}
        self.pricing = _Pricing(ledger)

    def _load(self, aggregate_id: UUID) -> Any:
        if aggregate_id not in self.touched:
            live = self.ledger.live_sessions.get(aggregate_id)
            if live is not None:
                self.touched[aggregate_id] = live
            else:
                try:
                    self.touched[aggregate_id] = self.ledger.repository.get(aggregate_id)
                except AggregateNotFoundError:
                    return None
        return self.touched[aggregate_id]

    def _session(self, nas_id: str, acct_session_id: str) -> Session:
        session = self._load(Session.create_id(nas_id, acct_session_id))
        if session is None:
            session = Session(nas_id=nas_id, acct_session_id=acct_session_id)
            self.touched[session.id] = session
        assert isinstance(session, Session)
        return session

    def _registry(self, nas_id: str) -> NasSessions:
        registry = self._load(NasSessions.create_id(nas_id, self.shard))
        if registry is None:
            registry = NasSessions(nas_id=nas_id, shard=self.shard)
            self.touched[registry.id] = registry
        assert isinstance(registry, NasSessions)
        return registry

    def apply(self, record: AccountingRecord) -> None:
        if record.status.closes_nas:
            registry = self._registry(record.nas_id)
            key = record.idempotency_key()
            if registry.has_restarted(key):
                return
            for session_key in sorted(registry.open):
                session = self._load(UUID(session_key))
                if isinstance(session, Session):
                    session.close_by_nas(record.event_time, record.status.value)
            registry.nas_restarted(event_time=record.event_time, status=record.status.value, key=key)
            return
        session = self._session(record.nas_id, record.acct_session_id)
        before = set(session.open_incarnations())
        session.apply_record(record, self.pricing.tariff(record.username, record.event_time))
        after = set(session.open_incarnations())
        if after - before or before - after:
            registry = self._registry(record.nas_id)
            for _ in after - before:
                registry.session_opened(session_id=session.id)
            for _ in before - after:
                registry.session_closed(session_id=session.id)
