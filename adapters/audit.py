"""Audit I/O: chaining the ledger log as it grows, verifying a store or an exported file,
exporting a self-contained log, replaying a log into scratch read models and comparing them
with the live ones table by table (guarantees 4 and 6)."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from eventsourcing.persistence import Notification
from sqlalchemy import Engine, Table, select
from sqlalchemy.exc import IntegrityError

from ledger.chain import ChainedEvent, ChainVerifier, Verdict, chain
from projections import ReadModelProjector

from .event_log import LedgerStore

EXPORT_FORMAT = "wispgate-ledger-log"
Step = Callable[[], int]


def chain_step(store: LedgerStore, batch: int = 2000, min_interval: float = 0.0) -> Step:
    """Link the next events of the ledger log to the chain (the active site's chainer).

    ``min_interval``: a step that comes sooner than this after one that linked less than a
    full batch does nothing (returns 0). Woken by every ledger commit, the chainer otherwise
    linked a handful of events per transaction; gathering them costs the chain at most that
    much delay and saves most of its per-transaction CPU."""
    last = -float("inf")

    def step() -> int:
        nonlocal last
        if min_interval and time.monotonic() - last < min_interval:
            return 0
        with store.engine.connect() as conn:
            head, prev_hash = store.chain_head(conn)
            rows = store.events.chain_rows(conn, head, batch)
        if not rows:
            return 0
        try:
            store.append_links(chain(prev_hash, rows))
        except IntegrityError:  # another chainer (a second relay process) linked them first
            return 0
        if len(rows) < batch:
            last = time.monotonic()  # caught up: gather the next ones for a while
        return len(rows)

    return step


# ---- verify --------------------------------------------------------------------------------


@dataclass
class StoreVerdict:
    verdict: Verdict
    unchained: int = 0  # events after the chain head, not linked yet (written moments ago)


def verify_store(store: LedgerStore, progress: Callable[[int], None] | None = None) -> StoreVerdict:
    """Check every stored event against its link; name the first position that fails."""
    verifier = ChainVerifier()
    unchained_from: int | None = None
    unchained = 0
    for position, event, linked in store.walk():
        if progress is not None and position % 5000 == 0:
            progress(position)
        if linked is None:
            unchained_from = position if unchained_from is None else unchained_from
            unchained += 1
            continue
        if unchained_from is not None:  # a gap in the chain before a chained event: inserted
            verifier.broken_at, verifier.reason = unchained_from, "an event without a link precedes chained events"
            break
        if event is None:
            verifier.broken_at, verifier.reason = position, "a chained event is missing from the store"
            break
        pos, oid, version, topic, state = event
        if not verifier.feed(ChainedEvent(pos, oid, version, topic, state, linked[0], linked[1])):
            break
    return StoreVerdict(verifier.verdict(), unchained if verifier.broken_at is None else 0)


def verify_events(events: Iterable[ChainedEvent]) -> Verdict:
    verifier = ChainVerifier()
    for event in events:
        if not verifier.feed(event):
            break
    return verifier.verdict()


# ---- export --------------------------------------------------------------------------------


def _event_json(event: ChainedEvent) -> str:
    return json.dumps({"position": event.position, "originator_id": str(event.originator_id),
                       "originator_version": event.originator_version, "topic": event.topic,
                       "state": base64.b64encode(event.state).decode(), "prev_hash": event.prev_hash,
                       "hash": event.hash}, separators=(",", ":"))


def _event_from(item: dict[str, Any]) -> ChainedEvent:
    from uuid import UUID

    return ChainedEvent(int(item["position"]), UUID(item["originator_id"]), int(item["originator_version"]),
                        str(item["topic"]), base64.b64decode(item["state"]), str(item["prev_hash"]),
                        str(item["hash"]))


def export_log(store: LedgerStore, out: TextIO, *, site: str, epoch: int) -> tuple[int, int, str]:
    """Write the chained log as JSON lines: a header, one line per event, a trailer.
    Returns (events, head position, head hash)."""
    out.write(json.dumps({"format": EXPORT_FORMAT, "version": 1, "site": site, "epoch": epoch,
                          "exported_at": int(time.time())}) + "\n")
    count, head, head_hash, after = 0, 0, "", 0
    while events := store.chained_events(after, 5000):
        for event in events:
            out.write(_event_json(event) + "\n")
        count += len(events)
        after, head, head_hash = events[-1].position, events[-1].position, events[-1].hash
    out.write(json.dumps({"trailer": {"events": count, "head_position": head, "head_hash": head_hash}}) + "\n")
    return count, head, head_hash


class ExportFile:
    """Reads an export: ``header`` at once, events lazily, ``trailer`` once they are read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open() as handle:
            first = handle.readline()
        try:
            self.header: dict[str, Any] = json.loads(first)
        except json.JSONDecodeError:
            raise ValueError(f"{path} is not a wispgate log export") from None
        if self.header.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path} is not a wispgate log export")
        self.trailer: dict[str, Any] | None = None

    def events(self) -> Iterator[ChainedEvent]:
        with self.path.open() as handle:
            handle.readline()
            for number, line in enumerate(handle, start=2):
                item = json.loads(line)
                if "trailer" in item:
                    self.trailer = item["trailer"]
                    return
                try:
                    yield _event_from(item)
                except (KeyError, ValueError) as error:
                    raise ValueError(f"line {number} of {self.path} is not an event: {error}") from None


# ---- replay and compare ----------------------------------------------------------------------


def as_notification(event: ChainedEvent) -> Notification:
    return Notification(id=event.position, originator_id=event.originator_id,
                        originator_version=event.originator_version, topic=event.topic, state=event.state)


class Progress:
    """A progress bar on stderr with the rate in events/s."""

    def __init__(self, total: int, label: str = "replayed", stream: TextIO | None = None) -> None:
        self.total, self.label = max(total, 1), label
        self.stream = sys.stderr if stream is None else stream
        self.started = time.monotonic()
        self.shown = 0.0
        self.done = 0
        self.shown_done = -1
        self.elapsed = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        self.elapsed = now - self.started
        if (now - self.shown < 0.2 and done < self.total) or done == self.shown_done:
            return
        self.shown, self.shown_done = now, done
        share = min(1.0, done / self.total)
        bar = "#" * int(share * 30)
        self.stream.write(f"\r[{bar:<30}] {share:4.0%} {done:,}/{self.total:,} events {self.rate:,.0f} ev/s")
        self.stream.flush()

    @property
    def rate(self) -> float:
        return self.done / max(self.elapsed, 1e-9)

    def finish(self) -> None:
        self.update(self.done)
        self.stream.write("\n")
        self.stream.flush()


def replay(notifications: Iterable[Sequence[Notification]], projector: ReadModelProjector,
           progress: Progress | None = None) -> int:
    """Apply batches of notifications to ``projector`` (a scratch one); returns events applied."""
    done = 0
    for batch in notifications:
        projector.process(batch)
        done += len(batch)
        if progress is not None:
            progress.update(done)
    return done


def store_batches(ledger: Any, after: int, upto: int, batch: int = 2000) -> Iterator[Sequence[Notification]]:
    """The ledger's notifications in (after, upto], in batches."""
    position = after
    while position < upto:
        found = ledger.recorder.select_notifications(start=position + 1, limit=batch, stop=upto)
        if not found:
            return
        yield found
        position = found[-1].id


@dataclass
class TableDiff:
    table: str
    live_rows: int = 0
    replay_rows: int = 0
    only_live: int = 0
    only_replay: int = 0
    changed: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.only_live or self.only_replay or self.changed)


def _rows(engine: Engine, table: Table) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    keys = list(table.primary_key.columns) or list(table.columns)
    with engine.connect() as conn:
        for row in conn.execute(select(table).order_by(*keys)).mappings():
            yield tuple(row[k.name] for k in keys), dict(row)


def compare_table(live: Engine, scratch: Engine, table: Table, max_examples: int = 5) -> TableDiff:
    """Merge-compare two copies of ``table`` ordered by primary key."""
    diff = TableDiff(table.name)
    left, right = _rows(live, table), _rows(scratch, table)
    a, b = next(left, None), next(right, None)

    def note(text: str) -> None:
        if len(diff.examples) < max_examples:
            diff.examples.append(text)

    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            diff.live_rows += 1
            diff.only_live += 1
            note(f"only live: {a[1]}")
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            diff.replay_rows += 1
            diff.only_replay += 1
            note(f"only in replay: {b[1]}")
            b = next(right, None)
        else:
            diff.live_rows += 1
            diff.replay_rows += 1
            if a[1] != b[1]:
                diff.changed += 1
                changed = {k: (a[1][k], b[1].get(k)) for k in a[1] if a[1][k] != b[1].get(k)}
                note(f"key {a[0]}: live vs replay {changed}")
            a, b = next(left, None), next(right, None)
    return diff


def model_tables(projector: ReadModelProjector) -> list[Table]:
    return [table for model in projector.models for table in model.tables]


def account_as_of(ledger: Any, account_id: str, at: int, batch: int = 5000) -> Any:
    """Fold the whole ledger log into one account's figures at ``at`` (see ledger.point_in_time)."""
    from ledger.point_in_time import AccountAsOf

    figures = AccountAsOf(account_id=account_id, at=at)
    position = 0
    while found := ledger.recorder.select_notifications(start=position + 1, limit=batch):
        for notification in found:
            figures.feed(ledger.mapper.to_domain_event(notification))
        position = found[-1].id
    return figures
