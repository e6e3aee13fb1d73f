"""Two sites kept in sync by shipping the ledger log (guarantee 7).

The standby pulls the active site's chained log after its own head, checks that the batch
chains onto what it holds, and inserts the events under the same ids with the same bytes;
its projector keeps its read models warm. It neither rates nor answers RADIUS.

A `SiteController` thread per `serve` process turns the durable site record into behaviour:
active (gate open, RADIUS accepting, chainer running, watching the peer's epoch) or standby
(gate closed, pulling). A site that learns of a higher epoch on its peer is fenced: it stops
writing, becomes a standby, sets its divergent tail aside for audit, re-submits the raw
accounting records behind that tail to the active site (charged once there, by content), and
then pulls like any standby. Promotion raises the epoch.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
from prometheus_client import Gauge

from domain.ids import accounting_record_id
from ledger.chain import ChainedEvent, ChainVerifier

from .audit import chain_step
from .event_log import EventTable, LedgerStore, SiteRecord, store_engine
from .followers import BATCH as RATER_BATCH
from .followers import Stage

log = logging.getLogger(__name__)

# Stages that follow the ledger log and record their position in the ledger's own tracking
# table: a fenced site rewinds them to the common prefix.
LEDGER_FOLLOWERS = ("enforcer",)

LAG_POSITIONS = Gauge("wispgate_replication_lag_positions", "Positions the standby is behind the active site")
LAG_SECONDS = Gauge("wispgate_replication_lag_seconds", "Seconds since the standby last held the active's head")
SITE_EPOCH = Gauge("wispgate_site_epoch", "This site's epoch")
SITE_ACTIVE = Gauge("wispgate_site_active", "1 when this site is active, 0 when standby")


class PeerError(Exception):
    """The other site could not be reached or answered with an error."""


class Diverged(Exception):
    """This site's log is not a prefix of the active site's."""


# ---- wire format -------------------------------------------------------------------------------


def encode_batch(events: list[ChainedEvent], **meta: Any) -> bytes:
    """A gzip-compressed JSON batch of chained events (what GET /v1/replication/log returns)."""
    body = meta | {"events": [{
        "position": e.position, "originator_id": str(e.originator_id), "originator_version": e.originator_version,
        "topic": e.topic, "state": base64.b64encode(e.state).decode(), "prev_hash": e.prev_hash, "hash": e.hash,
    } for e in events]}
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), compresslevel=5)


def decode_events(items: list[dict[str, Any]]) -> list[ChainedEvent]:
    return [ChainedEvent(int(i["position"]), UUID(i["originator_id"]), int(i["originator_version"]),
                         str(i["topic"]), base64.b64decode(i["state"]), str(i["prev_hash"]), str(i["hash"]))
            for i in items]


class PeerClient:
    """HTTP to the other site's API with the replication token."""

    def __init__(self, url: str, token: str, timeout: float = 2.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as error:
            raise PeerError(f"{method} {path}: {type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise PeerError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def site(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/site"))

    def log(self, after: int, limit: int) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/replication/log", params={"after": after, "limit": limit}))

    def hash_at(self, position: int) -> str | None:
        found = self._call("GET", "/v1/replication/hash", params={"position": position}).get("hash")
        return None if found is None else str(found)

    def resubmit(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/replication/records", json={"records": records}))

    def close(self) -> None:
        self.http.close()


# ---- the standby's side ------------------------------------------------------------------------


def pull_once(store: LedgerStore, peer: PeerClient, limit: int) -> tuple[int, dict[str, Any]]:
    """Fetch and apply one batch; returns (events applied, the peer's batch metadata).
    Raises Diverged when this log is not a prefix of the peer's."""
    head, head_hash = store.chain_head()
    if store.head_position() > head:
        raise Diverged(f"events after chained position {head} were written on this site")
    batch = peer.log(head, limit)
    if batch.get("anchor_hash") != head_hash:
        raise Diverged(f"the active site's hash at position {head} differs from this site's")
    events = decode_events(batch["events"])
    verifier = ChainVerifier(prev_hash=head_hash, after=head)
    for event in events:
        if not verifier.feed(event):
            raise PeerError(f"the active site's log does not chain at position {event.position} "
                            f"({verifier.reason}): refusing it")
    if events:
        store.append_replicated(events)
    return len(events), batch


def common_prefix(store: LedgerStore, peer: PeerClient) -> int:
    """The last position both sites hold with the same hash (binary search: equal hashes at a
    position mean equal logs up to it)."""
    low, high, best = 0, store.chain_length() - 1, 0
    while low <= high:
        middle = (low + high) // 2
        found = store.link_at_index(middle)
        assert found is not None
        position, local_hash = found
        if peer.hash_at(position) == local_hash:
            best, low = position, middle + 1
        else:
            high = middle - 1
    return best


def record_keys(events: list[Any]) -> set[str]:
    """Content keys of the accounting records behind decoded ledger events."""
    keys = set()
    for event in events:
        for name in ("key", "record_key"):
            value = getattr(event, name, None)
            if isinstance(value, str) and value:
                keys.add(value)
    return keys


class SiteController(threading.Thread):
    """Keeps one `serve` process's behaviour in line with its durable site record."""

    def __init__(self, runtime: Any, *, interval: float = 0.2, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="site", daemon=True)
        self.runtime = runtime
        self.settings = runtime.settings
        self.store = LedgerStore.open(data_dir=self.settings.data_dir, database_url=self.settings.database_url)
        runtime.__dict__["_ledger_store"] = self.store  # the API's routers use the same one
        runtime.__dict__["_site_controller"] = self  # /v1/site reports what this process does
        # On PostgreSQL the accounting log lives in the same database: share the engine.
        self.intake_table = EventTable(
            self.store.engine if self.store.events.postgres else store_engine(
                "accountinglog", data_dir=self.settings.data_dir, database_url=self.settings.database_url),
            "accountinglog")
        self.peer = (PeerClient(self.settings.peer_url, self.settings.replication_token)
                     if self.settings.peer_url else None)
        self.accounting: Any = None
        self.interval = interval
        self.clock = clock
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.active: bool | None = None
        self.record = self.store.site(default_name=self.settings.site, default_role=self.settings.site_role)
        self.last_contact = clock()
        # Automatic promotion needs an active peer seen by this process first: a standby that
        # starts before its active site must not take over from it.
        self.seen_active_peer = False
        self.last_peer_check = 0.0
        self.status: dict[str, Any] = {}
        self.chainer = Stage("chainer", runtime.gate.writer(chain_step(self.store, min_interval=0.25)),
                             poll_interval=0.2,
                             nice=runtime.settings.stage_nice)
        runtime.ledger.listeners.append(self.chainer.wakeup.set)
        self._start_role()

    def _start_role(self) -> None:
        """Before any stage runs, the process takes the role its record says."""
        self._apply_role(self.record)

    # ---- lifecycle --------------------------------------------------------------------------

    def attach_accounting(self, accounting: Any) -> None:
        self.accounting = accounting
        accounting.accepting = bool(self.active)

    def run(self) -> None:
        self.chainer.start()
        while not self.stopping.is_set():
            try:
                busy = self.tick()
            except Exception:
                log.exception("site controller step failed; retrying")
                busy = False
            if not busy:
                self.wakeup.wait(self.interval)
                self.wakeup.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.chainer.stop()
        if self.is_alive():
            self.join(timeout=10)
        if self.chainer.is_alive():
            self.chainer.join(timeout=10)
        if self.peer is not None:
            self.peer.close()
        self.store.close()
        self.intake_table.engine.dispose()
        self.runtime.__dict__.pop("_ledger_store", None)
        self.runtime.__dict__.pop("_site_controller", None)

    # ---- one step -----------------------------------------------------------------------------

    def tick(self) -> bool:
        """Reconcile with the durable record, then do this role's work. True if more is waiting."""
        record = self.store.site(default_name=self.settings.site, default_role=self.settings.site_role)
        if record.active != self.active:
            self._apply_role(record)
        self.record = record
        SITE_EPOCH.set(record.epoch)
        SITE_ACTIVE.set(1 if record.active else 0)
        if self.peer is None:
            return False
        if record.active:
            self._watch_peer(record)
            return False
        return self._standby_step(record)

    def _apply_role(self, record: SiteRecord) -> None:
        gate = self.runtime.gate
        with gate.exclusive():
            if record.active:
                # The store may hold events this process never wrote (replicated): start clean.
                self.store.sync_sequence()
                self._forget_cached_aggregates()
                if record.resubmit_from:
                    # Promoted before its re-submission reached the old active site: rate those
                    # records here instead (records already in the log are recognised by content).
                    self.store.rewind_followers(("AccountingLog",), record.resubmit_from - 1)
                    self.store.note_peer(resubmit_from=0)
                gate.writes_open = True
            else:
                gate.writes_open = False
                drain_chain(self.store)  # what this site wrote while active is chained before it stops
        if self.accounting is not None:
            self.accounting.accepting = record.active
        self.active = record.active
        # A role change is worth a warning; the role a site starts in as configured is not.
        level = logging.INFO if record.reason == "configured" else logging.WARNING
        log.log(level, "site %s is %s (epoch %d): %s", record.name, record.role, record.epoch, record.reason)

    def _forget_cached_aggregates(self) -> None:
        forget_cached_aggregates(self.runtime.ledger)

    # ---- active ---------------------------------------------------------------------------------

    def _watch_peer(self, record: SiteRecord) -> None:
        now = self.clock()
        if now - self.last_peer_check < 1.0:
            return
        self.last_peer_check = now
        assert self.peer is not None
        try:
            peer = self.peer.site()
        except PeerError:
            return  # the other site is down or cut off: keep running alone
        self.last_contact = now
        if peer.get("role") == "active" and outranks(peer, record):
            log.error("site %s (epoch %d) is active at a higher epoch than this site (%d): fencing",
                      peer.get("name"), peer.get("epoch"), record.epoch)
            self.store.set_site(role="standby", epoch=int(peer["epoch"]),
                                reason=f"fenced: {peer.get('name')} is active at epoch {peer['epoch']}")
            self.wakeup.set()

    # ---- standby --------------------------------------------------------------------------------

    def _standby_step(self, record: SiteRecord) -> bool:
        assert self.peer is not None
        now = self.clock()
        try:
            if record.resubmit_from:
                self._resubmit(record.resubmit_from)
                return True
            peer = self.peer.site()
            self.last_contact = now
            if peer.get("role") != "active":
                return False  # nothing authoritative to follow
            self.seen_active_peer = True
            if int(peer["epoch"]) > record.epoch:
                self.store.set_site(role="standby", epoch=int(peer["epoch"]), reason=f"following {peer.get('name')}")
            applied, batch = pull_once(self.store, self.peer, self.settings.replication_batch)
        except Diverged as why:
            log.error("this site's log diverged from the active site's: %s", why)
            self._fence_divergent_tail(record)
            return True
        except PeerError as error:
            log.warning("cannot reach the active site: %s", error)
            if record.caught_up_at:
                LAG_SECONDS.set(max(0.0, now - record.caught_up_at))
            self._maybe_promote(record, now)
            return False
        if applied:
            self.runtime.ledger.wake_followers()
        head = self.store.head_position()
        peer_head = int(batch.get("head_position", head))
        lag = max(0, peer_head - head)
        caught_up = int(now) if lag == 0 else record.caught_up_at
        LAG_POSITIONS.set(lag)
        LAG_SECONDS.set(max(0.0, now - caught_up) if caught_up else 0)
        if (int(batch.get("epoch", 0)), peer_head, caught_up) != (record.peer_epoch, record.peer_head,
                                                                     record.caught_up_at):
            self.store.note_peer(peer_epoch=int(batch.get("epoch", 0)), peer_head=peer_head, caught_up_at=caught_up)
        return bool(applied >= self.settings.replication_batch)

    def _maybe_promote(self, record: SiteRecord, now: float) -> None:
        after = self.settings.failover_after
        if after > 0 and self.seen_active_peer and now - self.last_contact > after:
            promote(self.store, record, reason=f"automatic: no heartbeat from the active site for {after} s")
            self.wakeup.set()

    def _fence_divergent_tail(self, record: SiteRecord) -> None:
        """Set this site's events after the common prefix aside (never merged), note which raw
        records to re-submit, and rebuild the read models from the remaining prefix."""
        assert self.peer is not None
        common = common_prefix(self.store, self.peer)
        ledger = self.runtime.ledger
        divergent = [ledger.mapper.to_domain_event(_notification(row)) for row in self.store.events_after(common)]
        resubmit_from = self._resubmit_start(common, divergent)
        with self.runtime.gate.exclusive():
            aside = self.store.set_aside_after(common, record.epoch, resubmit_from=resubmit_from,
                                               followers=LEDGER_FOLLOWERS)
            self._forget_cached_aggregates()
            self.runtime.projector.reset()
            # This site's own unrated records are re-submitted too: its rater must never rate
            # them here later (after a failback), so its position moves past them.
            intake_head = self.runtime.intake.position()
            if intake_head > ledger.tracked_position("AccountingLog"):
                from eventsourcing.persistence import Tracking

                ledger.recorder.insert_tracking(Tracking("AccountingLog", intake_head))
        log.error("set %d divergent events after position %d aside (audit_divergent_events); "
                  "re-submitting raw records from intake position %d", len(aside), common, resubmit_from)

    def _resubmit_start(self, common: int, divergent: list[Any]) -> int:
        """The first intake position whose record may not be in the active site's log: before
        every record behind a divergent event, and at most one rater batch before the record
        behind the last event both sites hold (a batch may straddle the divergence point).
        Re-submitting more than needed is harmless: the active site charges by content, once."""
        candidates = []
        keys = record_keys(divergent)
        if keys:
            with self.intake_table.engine.connect() as conn:
                candidates += self.intake_table.positions_of(conn, [accounting_record_id(k) for k in keys])
        last_shared = self._last_shared_record_position(common)
        candidates.append(max(1, last_shared + 1 - RATER_BATCH))
        return max(1, min(candidates))

    def _last_shared_record_position(self, common: int) -> int:
        ledger = self.runtime.ledger
        upto = common
        while upto > 0:
            window = self.store.events_after(max(0, upto - 2000))
            rows = [row for row in window if row[0] <= upto]
            for row in reversed(rows):
                keys = record_keys([ledger.mapper.to_domain_event(_notification(row))])
                if keys:
                    with self.intake_table.engine.connect() as conn:
                        found = self.intake_table.positions_of(conn, [accounting_record_id(k) for k in keys])
                    return min(found) if found else 0
            upto -= 2000
        return 0

    def _resubmit(self, start: int) -> None:
        assert self.peer is not None
        intake = self.runtime.intake
        position, sent = start - 1, 0
        while found := intake.recorder.select_notifications(start=position + 1, limit=500):
            records = [intake.mapper.to_domain_event(n).record for n in found]
            self.peer.resubmit(records)
            sent += len(records)
            position = found[-1].id
            self.store.note_peer(resubmit_from=position + 1)  # resume here after a crash
        self.store.note_peer(resubmit_from=0)
        log.warning("re-submitted %d raw accounting records to the active site", sent)


def forget_cached_aggregates(ledger: Any) -> None:
    """Aggregates cached in memory may hold state the log no longer has (a set-aside tail) or
    miss events another site wrote (replicated): drop them."""
    ledger.forget_live_sessions()
    cache = getattr(ledger.repository, "cache", None)
    if cache is not None and hasattr(cache, "maxsize"):
        ledger.repository.cache = type(cache)(maxsize=cache.maxsize)


def _notification(row: tuple[int, UUID, int, str, bytes]) -> Any:
    from eventsourcing.persistence import Notification

    return Notification(id=row[0], originator_id=row[1], originator_version=row[2], topic=row[3], state=row[4])


def drain_chain(store: LedgerStore) -> None:
    step = chain_step(store)
    while step():
        pass


def outranks(peer: dict[str, Any], record: SiteRecord) -> bool:
    """Whether the peer's claim to be active beats this site's: higher epoch; on a tie (two
    sites promoted independently from the same epoch) the lower site name."""
    epoch = int(peer.get("epoch", 0))
    return epoch > record.epoch or (epoch == record.epoch and str(peer.get("name", "")) < record.name)


def promote(store: LedgerStore, record: SiteRecord, *, reason: str) -> SiteRecord:
    """Make this site active at a new epoch above any it has seen."""
    epoch = max(record.epoch, record.peer_epoch) + 1
    store.set_site(role="active", epoch=epoch, reason=reason)
    return store.site(default_name=record.name, default_role="active")


def demote(store: LedgerStore, record: SiteRecord, *, reason: str) -> SiteRecord:
    """Make this site a standby at its current epoch (a planned switchover or failback)."""
    store.set_site(role="standby", epoch=record.epoch, reason=reason)
    return store.site(default_name=record.name, default_role="standby")
