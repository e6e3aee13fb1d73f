"""Rebuilding every read model from position 0 without the live projector's per-batch work.

At position 0 the read-model tables are empty, so a rebuild never needs to read them back:
it folds the log into rows held in memory (``fold.py``) and writes each window's new rows in
bulk (SQLite: the driver's executemany; PostgreSQL: COPY), rows stored by an earlier window and
changed since with one UPDATE executemany, and the position, in one transaction per window.
The log is read with a raw cursor (id, originator, version, topic and state only), and events
no read model handles are left out by the query. Invoices keep their own unit of work
(``invoices.py``), fed each window's decoded invoice, payment and credit-note events, as live.

``ReadModelProjector.rebuild`` takes this path when it starts from position 0 with the default
read models and a plain (unencrypted, uncompressed) JSON store, and the windowed ``process``
path otherwise; both give the rows live projection gives (``tests/test_rebuild.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from decimal import Context, localcontext
from typing import Any

import orjson
from eventsourcing.utils import get_topic
from sqlalchemy import Connection, Engine, Table, and_, bindparam, delete, insert, select, update

from . import tables as t
from .fold import Fold, Row, balance_values
from .invoices import InvoiceModel

LogRow = tuple[int, str, int, str, bytes]  # id, originator id (hyphenated), version, topic, state
INVOICE_EVENTS = ("Invoice.Drafted", "Invoice.Issued", "Payment.Received", "CreditNote.Issued")


def handled_topics() -> dict[str, str]:
    """Topic -> qualified event name of every event the default read models handle."""
    from ledger.access import ApiToken
    from ledger.account import Account, Payment, UsernameClaim
    from ledger.billing_period import BillingPeriod
    from ledger.catalog import Nas, Plan
    from ledger.invoice import CreditNote, Invoice
    from ledger.session import Session

    from .projector import default_models

    aggregates = {cls.__name__: cls for cls in (ApiToken, Account, Payment, UsernameClaim, BillingPeriod, Nas,
                                                  Plan, CreditNote, Invoice, Session)}
    topics = {}
    for model in default_models():
        for name in dir(model.batch_class):
            if name.startswith("on_"):
                aggregate, event = name[3:].split("_", 1)
                cls = getattr(aggregates[aggregate], event)
                topics[get_topic(cls)] = cls.__qualname__
    return topics


class LogReader:
    """Reads the ledger's stored events by notification id with one raw query per window."""

    def __init__(self, recorder: Any, topics: Sequence[str]) -> None:
        from eventsourcing.postgres import PostgresApplicationRecorder
        from eventsourcing.sqlite import SQLiteApplicationRecorder

        self.recorder = recorder
        self.topics = list(topics)
        if isinstance(recorder, SQLiteApplicationRecorder):
            self.read, self.count = self._sqlite_read, self._sqlite_count
        elif isinstance(recorder, PostgresApplicationRecorder):
            self.read, self.count = self._postgres_read, self._postgres_count
        else:
            raise TypeError(f"no raw reader for {type(recorder).__name__}")

    @staticmethod
    def supports(recorder: Any) -> bool:
        # Only modules already imported: a PostgreSQL recorder implies its module was (and
        # importing psycopg to find out costs half a second).
        kinds = [getattr(sys.modules.get(module), name, None) for module, name in (
            ("eventsourcing.sqlite", "SQLiteApplicationRecorder"),
            ("eventsourcing.postgres", "PostgresApplicationRecorder"))]
        return isinstance(recorder, tuple(kind for kind in kinds if kind is not None))

    def _sqlite_read(self, after: int, upto: int) -> list[LogRow]:
        marks = ",".join("?" * len(self.topics))
        statement = (f"SELECT rowid, originator_id, originator_version, topic, state "
                     f"FROM {self.recorder.events_table_name} WHERE rowid > ? AND rowid <= ? "
                     f"AND topic IN ({marks}) ORDER BY rowid")
        with self.recorder.datastore.transaction(commit=False) as c:
            c.execute(statement, [after, upto, *self.topics])
            return [(r[0], _hyphenated(r[1]), r[2], r[3], r[4]) for r in c.fetchall()]

    def _sqlite_count(self, after: int, upto: int) -> int:
        with self.recorder.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT count(*) FROM {self.recorder.events_table_name} WHERE rowid > ? AND rowid <= ?",
                      [after, upto])
            return int(c.fetchone()[0])

    def _postgres_table(self) -> str:
        return f'"{self.recorder.datastore.schema}"."{self.recorder.events_table_name}"'

    def _postgres_read(self, after: int, upto: int) -> list[LogRow]:
        from psycopg.rows import tuple_row

        statement = (f"SELECT notification_id, originator_id, originator_version, topic, state "
                     f"FROM {self._postgres_table()} WHERE notification_id > %s AND notification_id <= %s "
                     f"AND topic = ANY(%s) ORDER BY notification_id")
        with self.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(statement, [after, upto, self.topics])
            return [(r[0], str(r[1]), r[2], r[3], bytes(r[4])) for r in cur.fetchall()]

    def _postgres_count(self, after: int, upto: int) -> int:
        from psycopg.rows import tuple_row

        statement = (f"SELECT count(*) FROM {self._postgres_table()} "
                     f"WHERE notification_id > %s AND notification_id <= %s")
        with self.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(statement, [after, upto])
            row = cur.fetchone()
            return int(row[0]) if row else 0


def _hyphenated(originator_id: str) -> str:
    h = originator_id.lower()
    if len(h) == 32:
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return originator_id


class FastRebuild:
    """One rebuild from position 0: ``run`` folds the log window by window."""

    def __init__(self, engine: Engine, name: str, recorder: Any, decode: Callable[[Any], Any]) -> None:
        self.engine = engine
        self.name = name
        self.decode = decode
        self.topics = handled_topics()
        self.reader = LogReader(recorder, sorted(self.topics))
        self.recorder = recorder
        self.fold = Fold()
        self.invoice_model = InvoiceModel()

    def run(self, *, upto: int | None, window: int, progress: Callable[[int], None] | None,
            advanced: Callable[[int], None]) -> tuple[int, int]:
        """Fold the log from 0 to ``upto`` (or its head, followed while it grows); returns
        (notifications read, position reached), the position -1 when another projector moved
        the stored position meanwhile (the caller goes on from there the live way)."""
        position = done = 0
        while True:
            head = upto if upto is not None else (self.recorder.max_notification_id() or 0)
            if position >= head:
                return done, position
            while position < head:
                end = min(position + window, head)
                if not self._window(position, end):
                    return done, -1
                done += self.reader.count(position, end)
                position = end
                advanced(position)
                if progress is not None:
                    progress(done)
            if upto is not None:
                return done, position

    def _window(self, after: int, upto: int) -> bool:
        """Fold and write the notifications after ``after`` up to ``upto``; False (nothing
        written) when the stored position is no longer ``after``."""
        from eventsourcing.persistence import Notification

        rows = self.reader.read(after, upto)
        topics, hot, cold = self.topics, self.fold.hot, self.fold.cold
        invoice_events: list[Any] = []
        # Exact sums: rated amounts may carry more digits than Decimal's default 28.
        with localcontext(Context(prec=80)):
            for position, originator_id, version, topic, state in rows:
                name = topics[topic]
                handler = hot.get(name)
                if handler is not None:
                    handler(position, originator_id, version, orjson.loads(state))
                    continue
                event = self.decode(Notification(id=position, originator_id=originator_id,
                                                 originator_version=version, topic=topic, state=state))
                call = cold.get(name)
                if call is not None:
                    call(position, event)
                if name in INVOICE_EVENTS:
                    invoice_events.append((position, event))
            with self.engine.begin() as conn:
                stored = conn.execute(select(t.positions.c.position).where(t.positions.c.name == self.name)
                                      .with_for_update()).scalar()
                if int(stored or 0) != after:
                    return False
                self._write(conn)
                if invoice_events:
                    batch = self.invoice_model.batch(conn)
                    batch.prepare([event for _, event in invoice_events])
                    for position, event in invoice_events:
                        batch.apply(position, event)
                    batch.flush()
                if stored is None:
                    conn.execute(insert(t.positions).values(name=self.name, position=upto))
                else:
                    conn.execute(update(t.positions).where(t.positions.c.name == self.name).values(position=upto))
        return True

    def _write(self, conn: Connection) -> None:
        fold = self.fold
        for rows in (fold.nas, fold.plans, fold.accounts, fold.usernames, fold.api_tokens):
            new, dirty = rows.take()
            bulk_insert(conn, rows.table, new)
            _update_by_key(conn, rows.table, dirty)
        new, dirty = fold.balances.take()
        bulk_insert(conn, t.balances, [balance_values(r) for r in new])
        _update_by_key(conn, t.balances, [balance_values(r) for r in dirty])
        bulk_insert(conn, t.journal, fold.journal)
        bulk_insert(conn, t.payments, fold.payments)
        bulk_insert(conn, t.session_aggregates, fold.registered)
        fold.journal, fold.payments, fold.registered = [], [], []
        new, dirty = fold.take_sessions()
        bulk_insert(conn, t.sessions, new)
        _update_by_key(conn, t.sessions, dirty)
        made, completed = fold.take_keyless()
        bulk_insert(conn, t.sessions_keyless, made)
        if completed:
            keyless = t.sessions_keyless
            conn.execute(delete(keyless).where(keyless.c.row_id == bindparam("k_row")),
                         [{"k_row": row_id} for row_id in completed])
        new_usage, dirty_usage = fold.take_usage()
        bulk_insert(conn, t.usage, new_usage)
        if dirty_usage:
            usage = t.usage
            conn.execute(update(usage).where(and_(
                usage.c.account_id == bindparam("k_account"), usage.c.granularity == bindparam("k_granularity"),
                usage.c.bucket_start == bindparam("k_start"), usage.c.band == bindparam("k_band")))
                .values(upload_bytes=bindparam("up"), download_bytes=bindparam("down")),
                [{"k_account": a, "k_granularity": g, "k_start": s, "k_band": b, "up": up, "down": down}
                 for a, g, s, b, up, down in dirty_usage])


def _tuples(table: Table, rows: Sequence[Row | tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    names = [c.name for c in table.columns]
    for row in rows:
        yield tuple(row[n] for n in names) if isinstance(row, dict) else row


def bulk_insert(conn: Connection, table: Table, rows: Sequence[Row | tuple[Any, ...]]) -> None:
    """Insert rows (dicts by column name, or tuples in the table's column order) in bulk, in the
    connection's transaction: the DBAPI's executemany on SQLite, COPY on PostgreSQL."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    columns = ", ".join(f'"{n}"' for n in names)
    dialect = conn.dialect.name
    raw = conn.connection.driver_connection
    if dialect == "sqlite":
        cursor = raw.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(f'INSERT INTO "{table.name}" ({columns}) VALUES ({", ".join("?" * len(names))})',
                               _tuples(table, rows))
        finally:
            cursor.close()
    elif dialect == "postgresql":
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[union-attr]
                f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for values in _tuples(table, rows):
                copy.write_row(values)
    else:
        conn.execute(insert(table), [dict(zip(names, values, strict=True)) for values in _tuples(table, rows)])


def _update_by_key(conn: Connection, table: Table, rows: list[Row]) -> None:
    """Rows stored by an earlier window and changed since: one UPDATE executemany."""
    if not rows:
        return
    keys = list(table.primary_key.columns)
    key_names = {k.name for k in keys}
    statement = (update(table).where(*(k == bindparam("k_" + k.name) for k in keys))
                 .values({c.name: bindparam(c.name) for c in table.columns if c.name not in key_names}))
    conn.execute(statement, [{("k_" + k if k in key_names else k): v for k, v in r.items()} for r in rows])
