"""The read-model projector: follows the ledger's notification log and applies each batch of
events to its read models in one transaction together with its position, so a crash at any
point resumes exactly where the committed state says. Rebuilding from position 0
reproduces the live tables (guarantee 4)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Context, localcontext
from typing import Any

from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import get_topic, resolve_topic
from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update

from . import tables as t
from .base import ModelBatch, ReadModel, fetch_raw
from .decoding import event_decoder
from .live_log import LiveLog

# Built once: building a statement per batch was a few % of projecting a small batch.
_LOCK_POSITION = (update(t.positions).where(t.positions.c.name == bindparam("p_name"))
                  .values(position=t.positions.c.position))
_POSITIONS = (select(t.positions.c.name, t.positions.c.position)
              .where(t.positions.c.name.in_([bindparam("p_name"), bindparam("p_kept")])).with_for_update())
_SET_POSITION = (update(t.positions).where(t.positions.c.name == bindparam("p_name"))
                 .values(position=bindparam("p_position")))


def default_models() -> list[ReadModel]:
    """Every read model the product serves, in the order they are applied."""
    from .catalog import CatalogModel
    from .invoices import InvoiceModel
    from .money import MoneyModel
    from .sessions import SessionModel

    return [CatalogModel(), MoneyModel(), SessionModel(), InvoiceModel()]


def _handlers(batches: list[ModelBatch], event_class: type) -> list[Callable[[int, Any], None]]:
    """The calls that apply an event of ``event_class`` to ``batches``, looked up once per
    class and batch rather than per event (the lookup was a few % of projecting)."""
    name = "on_" + event_class.__qualname__.replace(".", "_")
    calls: list[Callable[[int, Any], None]] = []
    for batch in batches:
        if type(batch).apply is not ModelBatch.apply:  # a model with its own dispatch
            calls.append(batch.apply)
        elif (handler := getattr(batch, name, None)) is not None:
            calls.append(handler)
    return calls


class ReadModelProjector:
    """Projects ledger events into the tables of ``models`` on ``engine``.

    ``decode`` is the ledger's mapper (events are then decoded by ``decoding.event_decoder``,
    the fast way) or any function from a notification to an event."""

    NAME = "readmodels"

    def __init__(self, engine: Engine, decode: Mapper[Any] | Callable[[Notification], Any], *,
                 name: str = NAME, models: list[ReadModel] | None = None) -> None:
        self.engine = engine
        self.decode = event_decoder(decode) if isinstance(decode, Mapper) else decode
        self._mapper = decode if isinstance(decode, Mapper) else None
        self.name = name
        self.models = default_models() if models is None else models
        self._progress = threading.Condition()
        self._position = -1
        self.listeners: list[Callable[[int], None]] = []
        self._handled_topics: dict[str, bool] = {}
        # Rows the models keep between batches are valid while the stored position is the one
        # this instance committed last and the "kept" row holds this instance's token: any
        # other writer moves the position, and ``reset`` deletes the token (a reset followed by
        # a rebuild could end at the very same position over a rewritten log).
        self._kept_name = f"{name}#kept"
        self._kept: tuple[int, int] | None = None  # (token, position committed last)
        # The connection live batches run on, held between them: checking one out of the pool
        # and back, and SQLAlchemy's Connection around it, were a tenth of a small batch.
        self._held: Connection | None = None
        self._live_log: LiveLog | None = None
        # Built once: making the statement (and its cache key) each time was ~2/3 of the
        # ~300 us of CPU a position read took, and the enforcer reads it every step.
        self._position_query = select(t.positions.c.position).where(t.positions.c.name == self.name)

    def _handled(self, topic: str) -> bool:
        """Whether any read model has a handler for events of ``topic``."""
        handled = self._handled_topics.get(topic)
        if handled is None:
            name = "on_" + resolve_topic(topic).__qualname__.replace(".", "_")
            handled = self._handled_topics[topic] = any(
                hasattr(model.batch_class, name) for model in self.models)
        return handled

    def create_tables(self) -> None:
        t.metadata.create_all(self.engine)

    def table_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every read-model table's rows in primary-key order: what a rebuild is compared with."""
        rows = {}
        with self.engine.connect() as conn:
            for model in self.models:
                for table in model.tables:
                    keys = list(table.primary_key.columns) or list(table.columns)
                    rows[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*keys))]
        return rows

    def position(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(self._position_query).scalar()
        return int(value or 0)

    def wait_for(self, position: int, timeout: float = 5.0, poll_interval: float = 0.05) -> bool:
        """Block until the projected position reaches ``position`` (read-your-writes).

        Woken at once by a projector running in this process; when the projector runs
        elsewhere (distributed mode) the stored position is polled every ``poll_interval``."""
        deadline = time.monotonic() + timeout
        while True:
            stored = self.position()
            with self._progress:
                self._position = max(self._position, stored)
                if self._progress.wait_for(lambda: self._position >= position,
                                           timeout=max(0.0, min(poll_interval, deadline - time.monotonic()))):
                    return True
            if time.monotonic() >= deadline:
                return False

    def _advanced(self, position: int) -> None:
        with self._progress:
            self._position = position
            self._progress.notify_all()
        for listener in self.listeners:
            listener(position)

    def reset(self) -> None:
        """Empty the read models and the position: the next run rebuilds from 0."""
        with self.engine.begin() as conn:
            for model in reversed(self.models):
                for table in reversed(model.tables):
                    conn.execute(delete(table))
            conn.execute(delete(t.positions).where(t.positions.c.name.in_([self.name, self._kept_name])))
        self._forget()
        self._advanced(0)

    def _forget(self) -> None:
        self._kept = None
        for model in self.models:
            model.forget()

    def _drop_connection(self) -> None:
        """Give the held connection back (a batch failed: it may be broken)."""
        held, self._held = self._held, None
        if held is not None:
            try:
                held.invalidate()  # never reused: the failure may have been the connection's
            finally:
                held.close()

    def close(self) -> None:
        """Release the connection live batches hold (the engine stays usable)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def follow(self, recorder: Any, limit: int) -> int:
        """One live step: process the notifications of ``recorder`` (the ledger's) after this
        projector's position, ``limit`` at most; returns how many were read.

        The position read after is the one this instance committed last while it has one (a
        query fewer per batch); ``process`` applies nothing when the stored position turns out
        to be behind it (another writer reset the read models), and the next step reads the
        stored one. The log is read raw (``live_log.LiveLog``) when events are decoded the
        fast way."""
        after = self._kept[1] if self._kept is not None else self.position()
        if self._mapper is None:  # a custom decoder may need eventsourcing's Notification
            notifications: Sequence[Any] = recorder.select_notifications(start=after + 1, limit=limit)
        else:
            if self._live_log is None or self._live_log.recorder is not recorder:
                self._live_log = LiveLog(recorder)
            notifications = self._live_log.read(after, limit)
        if notifications:
            self.process(notifications, after=after)
        return len(notifications)

    def rebuild(self, recorder: Any, *, upto: int | None = None, window: int = 50_000,
                progress: Callable[[int], None] | None = None, fast: bool = True) -> int:
        """Project the ledger's log from the stored position (0 after ``reset``) up to ``upto``
        (everything recorded when omitted), ``window`` events per transaction; returns how
        many notifications were read. Large windows are what makes a rebuild fast: the read
        models fold a window in memory and write it with one executemany per table. The
        result is the same as following the log batch by batch (``tests/test_rebuild.py``).

        From position 0 (after ``reset``) with the default read models on a plain JSON store,
        the log is folded in memory and written in bulk (``rebuild.FastRebuild``); ``fast=False``
        keeps to the windowed ``process`` path (the reference, and the benchmark's "before")."""
        done = 0
        if fast and self._fast_rebuild_applies(recorder):
            from .rebuild import FastRebuild

            done, reached = FastRebuild(self.engine, self.name, recorder, self.decode).run(
                upto=upto, window=window, progress=progress, advanced=self._advanced)
            if reached >= 0:
                return done
        while True:
            position = self.position()
            if upto is not None and position >= upto:
                break
            notifications = recorder.select_notifications(start=position + 1, limit=window, stop=upto)
            if not notifications:
                break
            self.process(notifications)
            done += len(notifications)
            if progress is not None:
                progress(done)
        return done

    def _fast_rebuild_applies(self, recorder: Any) -> bool:
        """Whether ``rebuild`` may fold the log in memory: it starts from an empty read model,
        the models are the default ones (the fold mirrors their handlers) and events are stored
        as plain JSON (no cipher, no compressor) in a store the raw reader knows."""
        from .rebuild import LogReader, fold_covers_models

        mapper = self._mapper
        return (mapper is not None and mapper.cipher is None and mapper.compressor is None
                and [type(m) for m in self.models] == [type(m) for m in default_models()]
                and fold_covers_models() and LogReader.supports(recorder) and self.position() == 0)

    def project_recorded(self, recorded: Sequence[tuple[int, Any]]) -> bool:
        """Apply events the caller has just recorded and still holds, as (notification id,
        domain event) in id order, when they are exactly the notifications that follow the
        stored position (ids contiguous from it): the rows ``process`` gives for them, in one
        transaction with the new position, without reading and decoding them back (a billing
        run projects the invoices it has just issued). Returns False and changes nothing
        otherwise (the caller then catches up through ``process``)."""
        if not recorded:
            return True
        first, last = recorded[0][0], recorded[-1][0]
        if last - first + 1 != len(recorded):
            return False  # not contiguous: other notifications lie between them
        # Rows kept from this instance's last ``process`` may be stale by now (another
        # projector may have committed since): this rare path reads what it needs.
        self._forget()
        try:
            return self._project_recorded(recorded, first, last)
        except BaseException:
            self._forget()
            raise

    def _project_recorded(self, recorded: Sequence[tuple[int, Any]], first: int, last: int) -> bool:
        with localcontext(Context(prec=80)), self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # the write lock first, as in ``_process``
                conn.execute(update(t.positions).where(t.positions.c.name == self.name)
                             .values(position=t.positions.c.position))
            stored = conn.execute(
                select(t.positions.c.position).where(t.positions.c.name == self.name).with_for_update()
            ).scalar()
            if int(stored or 0) != first - 1:
                return False
            self._apply(conn, [(position, event) for position, event in recorded
                               if self._handled(get_topic(type(event)))])
            if stored is None:
                conn.execute(insert(t.positions).values(name=self.name, position=last))
            else:
                conn.execute(update(t.positions).where(t.positions.c.name == self.name).values(position=last))
        self._advanced(last)
        return True

    def _apply(self, conn: Connection, events: list[tuple[int, Any]]) -> None:
        """Apply decoded events (position, event) to every read model's batch on ``conn``
        and flush them (the caller moves the position in the same transaction)."""
        batches = [model.batch(conn) for model in self.models]
        for batch in batches:
            batch.prepare([event for _, event in events])
        dispatch: dict[type, list[Callable[[int, Any], None]]] = {}
        for position, event in events:
            calls = dispatch.get(type(event))
            if calls is None:
                calls = dispatch[type(event)] = _handlers(batches, type(event))
            for call in calls:
                call(position, event)
        for batch in batches:
            batch.flush()

    def process(self, notifications: Sequence[Notification], *, after: int | None = None) -> int:
        """Apply a batch (ids ascending); returns the new position. Notifications at or
        below the stored position are skipped (redelivery is harmless). ``after``: the
        position the batch was read after; when the stored position is behind it, the
        notifications between them are not in the batch, so nothing is applied."""
        if not notifications:
            return self.position()
        try:
            current = self._process(notifications, after)
        except BaseException:
            self._forget()  # rolled back: what the models kept in memory is not what is stored
            self._drop_connection()
            raise
        self._advanced(current)
        return current

    def _process(self, notifications: Sequence[Notification], after: int | None) -> int:
        held = self._held
        if held is None:
            held = self._held = self.engine.connect()
        # Exact sums: rated amounts may carry more digits than Decimal's default 28.
        with localcontext(Context(prec=80)), held.begin():
            conn = held
            if conn.dialect.name == "sqlite":
                # Take SQLite's write lock before reading the position (FOR UPDATE is ignored
                # there, and a plain SELECT runs before the driver begins the transaction), so
                # no other projector commits between the check and the write.
                fetch_raw(conn, _LOCK_POSITION, {"p_name": self.name})
            found = dict(fetch_raw(conn, _POSITIONS, {"p_name": self.name, "p_kept": self._kept_name}))
            stored = found.get(self.name)
            current = int(stored or 0)
            if after is not None and current != after:
                # Another writer moved the position: the next step reads after the stored one.
                self._forget()
                if current < after:  # moved back (a reset): the batch misses what lies between
                    return current
            fresh = [n for n in notifications if n.id > current]
            if not fresh:
                return current
            if self._kept is None or self._kept != (found.get(self._kept_name), current):
                self._forget()
            # Events no read model handles (a NAS's session registry, ...) are not decoded:
            # decoding was a third of projecting. The position still moves past them.
            self._apply(conn, [(notification.id, self.decode(notification)) for notification in fresh
                               if self._handled(notification.topic)])
            current = fresh[-1].id
            if stored is None:
                conn.execute(insert(t.positions).values(name=self.name, position=current))
            else:
                fetch_raw(conn, _SET_POSITION, {"p_name": self.name, "p_position": current})
            token = self._kept[0] if self._kept is not None else None
            if token is None:
                # Negative: tools that take the largest position of the table see only positions.
                token = -random.randrange(1, 2**62)
                if self._kept_name in found:
                    conn.execute(update(t.positions).where(t.positions.c.name == self._kept_name)
                                 .values(position=token))
                else:
                    conn.execute(insert(t.positions).values(name=self._kept_name, position=token))
        self._kept = (token, current)
        return current
