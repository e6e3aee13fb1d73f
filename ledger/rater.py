"""Applying accounting records: sessions count the usage, billing periods price it.

A batch of records is applied to in-memory aggregates and all their new events are recorded
in one transaction together with the upstream position (tracking), so a crash or a
redelivery never applies a record twice, and throughput does not hinge on one transaction
per packet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import Recording, Tracking

from domain.accounting import AccountingRecord
from domain.calendar import billing_period
from domain.ids import username_id
from domain.plans import PlanVersion, version_in_force
from rating import DataPack, split_usage

from .account import Account, UsernameClaim
from .batch_record import record_batch
from .billing_period import BillingPeriod
from .bulk import load_aggregates
from .emit import DueSnapshots, create, snapshots_due
from .journal import subscriber_account
from .nas_sessions import NasSessions
from .session import Session
from .tariff import Tariff

A = TypeVar("A", bound=Aggregate)


class Rater:
    if TYPE_CHECKING:
        live_sessions: dict[UUID, Aggregate]
        live_sessions_limit: int
        repository: Any

        def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None: ...
        def _notify(self, recordings: list[Recording[UUID]]) -> None: ...
        def _maybe_get(self, cls: type[A], aggregate_id: UUID) -> A | None: ...
        def forget_live_sessions(self) -> None: ...
        def get_account(self, account_id: UUID) -> Account: ...
        def get_plan(self, plan_id: UUID) -> Any: ...

    def apply_records(
        self, records: list[AccountingRecord], tracking: Tracking | None, *, shard: str = "",
    ) -> int:
        """Apply a batch of records and record the new events together with ``tracking``
        (the upstream position of the last record) in one transaction; returns how many
        events were recorded. ``shard`` names the accounting-log partition the records come
        from (distributed mode): NAS-wide state (the open-session registry) is kept per
        shard, so raters never contend on it."""
        batch = _Batch(self, shard)
        intervals: dict[type, int] = getattr(self, "snapshotting_intervals", None) or {}
        try:
            batch.prefetch(records)
            # Snapshots due mid-batch are encoded as they are taken (the state moves on).
            with snapshots_due(intervals, type(self).snapshot_class or Snapshot,  # type: ignore[attr-defined]
                               self.mapper.to_stored_event) as due:  # type: ignore[attr-defined]
                for record in records:
                    batch.apply(record)
                batch.record_registry_changes()
            processing_event: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
            # What ProcessingEvent.collect_events does, without its two runtime-protocol
            # isinstance checks per aggregate (a measurable share of a batch), and the pending
            # list taken whole (Aggregate.collect_events pops it one event at a time).
            # Snapshots falling due are found here, per aggregate (its interval looked up once,
            # not once per event by its id).
            snapshot_at: list[tuple[Any, Any]] = []
            for aggregate_id, aggregate in batch.touched.items():
                events = aggregate._pending_events  # noqa: SLF001
                aggregate._pending_events = []  # noqa: SLF001
                processing_event.events.extend(events)
                processing_event.aggregates[aggregate_id] = aggregate
                interval = intervals.get(type(aggregate))
                if interval:
                    snapshot_at += [(aggregate, e) for e in events if not e.originator_version % interval]
            snapshots, replayed = self._snapshots_from_memory(snapshot_at, due)
            self._store(processing_event, snapshots)
        except BaseException:
            self.forget_live_sessions()
            raise
        if len(self.live_sessions) + len(batch.touched) > self.live_sessions_limit:
            self.live_sessions.clear()
        self.live_sessions.update(batch.touched)
        for originator_id, version in replayed:
            self.take_snapshot(originator_id, version=version)  # type: ignore[attr-defined]
        self._notify([])
        return len(processing_event.events)

    def _store(self, processing_event: ProcessingEvent[UUID], snapshots: list[Any]) -> None:
        """What Application._record does, without the Recording and Notification objects it
        builds per event for listeners that read none of them (a tenth of a batch); the
        batch's due ``snapshots`` (stored events) are recorded with it (ledger/batch_record.py)."""
        to_stored_event = self.mapper.to_stored_event  # type: ignore[attr-defined]
        store: Any = getattr(self, "snapshots", None)
        record_batch(self.recorder, [to_stored_event(event) for event in processing_event.events],  # type: ignore[attr-defined]
                     processing_event.tracking, store.recorder if store is not None else None, snapshots)
        repository = self.repository
        if repository.cache and not repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                repository.cache.put(aggregate_id, aggregate)

    def _snapshots_from_memory(self, snapshot_at: list[tuple[Any, Any]],
                               due: DueSnapshots) -> tuple[list[Any], list[tuple[UUID, int]]]:
        """Snapshots at the configured intervals (``snapshot_at``: each aggregate with its event
        at a multiple of its interval), as Application._take_snapshots takes them, but of the
        aggregate in memory: at its current version, or as it was when an event emitted
        during the batch reached the interval (``due``), instead of re-reading and replaying
        it from the store. Returns them as stored events, and the (id, version) of those left
        to be replayed from the store after the batch (events triggered another way)."""
        store: Any = getattr(self, "snapshots", None)
        if store is None:
            return [], []
        stored: list[Any] = []
        replayed: list[tuple[UUID, int]] = []
        for aggregate, event in snapshot_at:
            taken = due.taken.get((event.originator_id, event.originator_version))
            if taken is not None:
                stored.append(taken)  # already a stored event
            elif aggregate.version == event.originator_version:
                snapshot_class = getattr(type(aggregate), "Snapshot", None) or type(self).snapshot_class  # type: ignore[attr-defined]
                stored.append(store.mapper.to_stored_event(snapshot_class.take(aggregate)))
            else:
                replayed.append((event.originator_id, event.originator_version))
        return stored, replayed

    def tariff_for(self, username: str, at: int) -> Tariff | None:
        """The account and plan version pricing ``username``'s usage at ``at``; None when
        the username belongs to no account (the usage is kept on the session, unrated)."""
        return _Pricing(self).tariff(username, at)


CATALOG_TOPICS = tuple(
    f"{module}:{cls}.{name}" for module, cls, names in (
        ("ledger.account", "Account", ("Opened", "PlanChanged", "BillingSettingsChanged", "AddonPurchased",
                                       "DiscountGranted", "Suspended", "Resumed", "Terminated",
                                       "EnforcementApplied", "EnforcementLifted")),
        ("ledger.account", "UsernameClaim", ("Claimed",)),
        ("ledger.catalog", "Plan", ("Created", "Revised")),
    ) for name in names
)


class CatalogCache:
    """Accounts, plans and username claims as the rater last read them.

    Before each batch, one query asks the ledger's log for catalogue events recorded since
    the last check (by any process: the API writes them) and forgets the aggregates they
    touch, so the rater prices with current plans without reading every account again for
    every batch."""

    def __init__(self) -> None:
        self.accounts: dict[UUID, Account] = {}
        self.plans: dict[UUID, list[PlanVersion]] = {}
        self.claims: dict[str, UUID] = {}
        # Each account's tariff over time (see _Pricing._schedule): it depends on the account
        # and its plans, so any catalogue change forgets them all (such changes are rare).
        self.schedules: dict[UUID, list[tuple[int, Tariff]]] = {}
        self.checked = 0

    def refresh(self, recorder: Any) -> None:
        head = recorder.max_notification_id() or 0
        if head <= self.checked:
            return
        start = self.checked + 1
        while start <= head:
            changed = recorder.select_notifications(start=start, limit=5000, stop=head, topics=CATALOG_TOPICS)
            for notification in changed:
                self.accounts.pop(notification.originator_id, None)
                self.plans.pop(notification.originator_id, None)
            if changed:
                self.schedules.clear()
            if len(changed) < 5000:
                break
            start = changed[-1].id + 1
        self.checked = head

    def clear(self) -> None:
        self.accounts.clear()
        self.plans.clear()
        self.claims.clear()
        self.schedules.clear()
        self.checked = 0


_UNSEEN = object()


class _Pricing:
    """Resolves username -> account -> plan version through the ledger's catalogue cache."""

    def __init__(self, ledger: Rater) -> None:
        self.ledger = ledger
        self.cache: CatalogCache = getattr(ledger, "catalog_cache", None) or CatalogCache()
        self.cache.refresh(ledger.recorder)  # type: ignore[attr-defined]
        self.unclaimed: set[str] = set()
        self.packs: dict[UUID, tuple[DataPack, ...]] = {}
        self.periods: dict[tuple[int, str], tuple[int, int]] = {}
        # Per username, its account and tariff schedule for this batch (the catalogue is checked
        # once, before it): tariff() runs several times a record, and each lookup by account
        # id hashes a UUID in Python.
        self.subscribers: dict[str, tuple[Account, list[tuple[int, Tariff]]] | None] = {}

    def preload(self, usernames: set[str]) -> None:
        """Read the claims and accounts of usernames not in the cache in a few queries (one
        repository read each would be two queries per username: the cold start of a rater)."""
        wanted = {username_id(u): u for u in usernames
                  if u and u not in self.cache.claims and u not in self.unclaimed}
        if not wanted:
            return
        claims = load_aggregates(self.ledger, UsernameClaim, wanted)  # type: ignore[arg-type]
        for claim_id, username in wanted.items():
            claim = claims.get(claim_id)
            if claim is None:
                self.unclaimed.add(username)  # as account() would conclude, for this batch only
            else:
                self.cache.claims[username] = claim.account_id
        known = self.cache.accounts  # (a set minus dict keys would hash every cached account)
        missing = {c.account_id for c in claims.values() if c.account_id not in known}
        if missing:
            self.cache.accounts.update(load_aggregates(self.ledger, Account, missing))  # type: ignore[arg-type]

    def account(self, username: str) -> Account | None:
        if not username or username in self.unclaimed:
            return None
        account_id = self.cache.claims.get(username)
        if account_id is None:
            claim = self.ledger._maybe_get(UsernameClaim, username_id(username))
            if claim is None:
                self.unclaimed.add(username)  # may be claimed later: remembered for this batch only
                return None
            account_id = self.cache.claims[username] = claim.account_id  # claims never move
        account = self.cache.accounts.get(account_id)
        if account is None:
            account = self.cache.accounts[account_id] = self.ledger.get_account(account_id)
        return account

    def subscriber(self, username: str) -> tuple[Account, list[tuple[int, Tariff]]] | None:
        """``username``'s account and its tariff schedule (see _schedule), or None when the
        username belongs to no account."""
        found = self.subscribers.get(username, _UNSEEN)
        if found is _UNSEEN:
            account = self.account(username)
            if account is None:
                found = None
            else:
                schedule = self.cache.schedules.get(account.id)
                if schedule is None:
                    schedule = self.cache.schedules[account.id] = self._schedule(account)
                found = (account, schedule)
            self.subscribers[username] = found
        return cast("tuple[Account, list[tuple[int, Tariff]]] | None", found)

    def tariff(self, username: str, at: int) -> Tariff | None:
        subscriber = self.subscriber(username)
        if subscriber is None:
            return None
        schedule = subscriber[1]
        chosen = schedule[0][1]
        for since, tariff in schedule:
            if since > at:
                break
            chosen = tariff
        return chosen

    def _schedule(self, account: Account) -> list[tuple[int, Tariff]]:
        """The account's tariff as a step function of time, built once until the catalogue
        changes (tariff() runs several times a record): ``(since, tariff)`` ascending, the first one also
        covering all time before it. The tariff only changes where the account changes plan
        or a version of one of its plans takes effect, so it is ``_tariff_at`` at each of
        those instants (and just before the first)."""
        points = set()
        for entry in account.plans:
            points.add(int(entry["effective_from"]))
            points.update(version.effective_from for version in self._versions(UUID(str(entry["plan_id"]))))
        ordered = sorted(points)
        return [(ordered[0] - 1, self._tariff_at(account, ordered[0] - 1))] + [
            (point, self._tariff_at(account, point)) for point in ordered]

    def _tariff_at(self, account: Account, at: int) -> Tariff:
        plan_id = account.plan_at(at)
        terms = version_in_force(self._versions(plan_id), at).terms
        return Tariff(account_id=account.id, plan_id=plan_id, terms=terms, anchor_day=account.anchor_day,
                      packs=self._packs(account), subscriber=subscriber_account(account.id, terms.payment_model))

    def _versions(self, plan_id: UUID) -> list[PlanVersion]:
        if plan_id not in self.cache.plans:
            self.cache.plans[plan_id] = self.ledger.get_plan(plan_id).plan_versions()
        return self.cache.plans[plan_id]

    def period(self, tariff: Tariff, at: int) -> tuple[int, int]:
        """billing_period() for the tariff's calendar, remembering the last period found per
        calendar: consecutive records of a batch nearly always fall in the same one."""
        calendar = (tariff.anchor_day, tariff.terms.timezone)
        last = self.periods.get(calendar)
        if last is None or not last[0] <= at < last[1]:
            last = self.periods[calendar] = billing_period(at, *calendar)
        return last

    def _packs(self, account: Account) -> tuple[DataPack, ...]:
        """The account's data packs, built once per batch (tariff() runs several times a record)."""
        packs = self.packs.get(account.id)
        if packs is None:
            packs = self.packs[account.id] = tuple(
                DataPack(p["pack_id"], int(p["total_bytes"]), int(p["valid_from"]), int(p["valid_until"]))
                for p in account.packs)
        return packs


class _Batch:
    """Aggregates loaded once per batch, so several records of a session in one batch
    apply to the same object and are saved together."""

    def __init__(self, ledger: Rater, shard: str = "") -> None:
        self.ledger = ledger
        self.shard = shard
        self.touched: dict[UUID, Aggregate] = {}
        self.prefetched: set[UUID] = set()
        self.pricing = _Pricing(ledger)
        # Per NAS: the sessions opened ("+id") and closed ("-id") so far, recorded as one
        # event per registry (before anything reads the registry, and at the end).
        self.registry_changes: dict[str, list[str]] = {}

    def prefetch(self, records: list[AccountingRecord]) -> None:
        """Load, in a few queries, the sessions and billing periods the batch will touch that
        are not in memory already (one repository read each would be a query each)."""
        live = self.ledger.live_sessions
        usage_records = [r for r in records if not r.status.closes_nas]
        session_ids = {Session.create_id(r.nas_id, r.acct_session_id) for r in usage_records}
        period_ids: set[UUID] = set()
        self.pricing.preload({r.username for r in usage_records})
        for record in usage_records:
            tariff = self.pricing.tariff(record.username, record.event_time)
            if tariff is not None:
                start, _ = self.pricing.period(tariff, record.event_time)
                period_ids.add(BillingPeriod.create_id(tariff.account_id, start))
        app: Any = self.ledger
        for cls, ids in ((Session, session_ids), (BillingPeriod, period_ids)):
            missing = [i for i in ids if i not in live and i not in self.touched]
            if missing:
                self.touched.update(load_aggregates(app, cls, missing))
        self.prefetched = session_ids | period_ids

    def _load(self, aggregate_id: UUID) -> Any:
        # Each lookup hashes the UUID in Python (uuid.UUID.__hash__): as few as possible.
        touched = self.touched.get(aggregate_id)
        if touched is not None:
            return touched
        live = self.ledger.live_sessions.get(aggregate_id)
        if live is not None:
            self.touched[aggregate_id] = live
            return live
        if aggregate_id in self.prefetched:
            return None  # looked for in bulk: it does not exist yet
        try:
            loaded = self.touched[aggregate_id] = self.ledger.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return loaded

    def _session(self, nas_id: str, acct_session_id: str) -> Session:
        session_id = Session.create_id(nas_id, acct_session_id)
        session = self._load(session_id)
        if session is None:
            session = self.touched[session_id] = create(Session, session_id, nas_id=nas_id,
                                                        acct_session_id=acct_session_id)
        assert isinstance(session, Session)
        return session

    def _registry(self, nas_id: str) -> NasSessions:
        registry_id = NasSessions.create_id(nas_id, self.shard)
        registry = self._load(registry_id)
        if registry is None:
            registry = self.touched[registry_id] = create(NasSessions, registry_id, nas_id=nas_id, shard=self.shard)
        assert isinstance(registry, NasSessions)
        return registry

    def _period(self, tariff: Tariff, at: int) -> BillingPeriod:
        start, end = self.pricing.period(tariff, at)
        period_id = BillingPeriod.create_id(tariff.account_id, start)
        period = self._load(period_id)
        if period is None:
            period = self.touched[period_id] = create(BillingPeriod, period_id, account_id=tariff.account_id,
                                                      start=start, end=end, currency=tariff.terms.currency)
        assert isinstance(period, BillingPeriod)
        return period

    def record_registry_changes(self, nas_id: str | None = None) -> None:
        """Record the pending session changes of ``nas_id``'s registry (of all, by default)."""
        for nas in [nas_id] if nas_id is not None else list(self.registry_changes):
            changes = self.registry_changes.pop(nas, None)
            if changes:
                self._registry(nas).sessions_changed(changes)

    def apply(self, record: AccountingRecord) -> None:
        if record.status.closes_nas:
            self.record_registry_changes(record.nas_id)
            registry = self._registry(record.nas_id)
            key = record.idempotency_key()
            if registry.has_restarted(key):
                return
            still_open: dict[str, int] = {}
            for session_key in sorted(registry.open):
                session = self._load(UUID(session_key))
                if isinstance(session, Session):
                    session.close_by_nas(record.event_time, record.status.value)
                    if remaining := len(session.open_incarnations()):
                        still_open[session_key] = remaining
            registry.nas_restarted(event_time=record.event_time, status=record.status.value, key=key,
                                   still_open=still_open)
            return
        session = self._session(record.nas_id, record.acct_session_id)
        subscriber = self.pricing.subscriber(record.username)
        account = subscriber[0] if subscriber is not None else None
        incarnation = session.incarnation_of(record)
        # A record changes only the incarnation it names (made by it when new), and a closed
        # incarnation never reopens: the session's open set changes by at most that one.
        was_open = incarnation is not None and session.incarnations[incarnation]["closed_at"] is None
        key = record.idempotency_key()
        usage = session.apply_record(record, account.id if account else None, key, incarnation)
        if usage is None:
            return  # seen before: nothing changed
        if incarnation is None:
            incarnation = str(record.session_start)  # the one apply_record made
        if was_open is not (session.incarnations[incarnation]["closed_at"] is None):
            self.registry_changes.setdefault(record.nas_id, []).append(("-" if was_open else "+") + str(session.id))
        if usage.total_bytes == 0 or account is None:
            return
        self._price(session, incarnation, record, key, usage, account)

    def _price(self, session: Session, incarnation: str, record: AccountingRecord, key: str, usage: Any,
               account: Account) -> None:
        """Split the usage at band changes and billing-period boundaries; each fragment is
        priced by the plan version in force at its start, in the period it falls in."""
        tariff = self.pricing.tariff(record.username, usage.start)
        assert tariff is not None
        # The account's life bounds what it is charged: a session already running when the
        # account was opened (a subscriber migrated while online) reports counters from its
        # own start, and that part was the previous system's to bill; after termination
        # nothing is the account's. Such usage stays counted on the session, unpriced.
        life = (account.opened_at, account.closed_at)
        cuts = [t for t in life if t is not None and usage.start < t < usage.end]
        cursor = usage.start
        while True:
            _, end = self.pricing.period(tariff, cursor)  # billing_period(), remembered per calendar
            if end >= usage.end:
                break
            cuts.append(end)
            cursor = end
        for fragment in split_usage(usage, tariff.terms, cuts):
            if fragment.total_bytes == 0 or not _within(fragment, life):
                continue
            fragment_tariff = self.pricing.tariff(record.username, fragment.start) or tariff
            self._period(fragment_tariff, fragment.start).rate(
                terms=fragment_tariff.terms, plan_id=fragment_tariff.plan_id, fragment=fragment,
                packs=fragment_tariff.packs, session_id=session.id, incarnation=incarnation,
                record_key=key, subscriber=fragment_tariff.subscriber,
            )


def _within(fragment: Any, life: tuple[int, int | None]) -> bool:
    """Whether a fragment (already cut at the account's opening and closing) falls in the
    account's life: from ``opened_at`` inclusive to ``closed_at`` exclusive; usage with no
    duration counts at its instant."""
    opened_at, closed_at = life
    if fragment.start < opened_at:
        return False
    return closed_at is None or fragment.start < closed_at
