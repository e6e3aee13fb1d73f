"""Direct SQL access to an application's event store, for what eventsourcing's recorders
do not offer: the hash chain (`log_chain`), the site record (`site_state`), events set aside
by fencing (`audit_divergent_events`), inserting replicated events under their original
notification ids, and truncating a fenced site's divergent tail.

The tables live next to the events (the same SQLite file, or the same PostgreSQL database),
so a replicated batch and its chain links commit in one transaction.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from ledger.chain import GENESIS, ChainedEvent

metadata = MetaData()

log_chain = Table(
    "log_chain", metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

site_state = Table(
    "site_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one site per store
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),  # active | standby
    Column("epoch", BigInteger, nullable=False),
    Column("changed_at", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    # What the standby last learned from the active site (status and lag).
    Column("peer_epoch", BigInteger, nullable=False, default=0),
    Column("peer_head", BigInteger, nullable=False, default=0),
    Column("caught_up_at", BigInteger, nullable=False, default=0),
    # Fencing: raw accounting records from this intake position on still have to be
    # re-submitted to the active site (0: none pending). Durable, so a restart resumes it.
    Column("resubmit_from", BigInteger, nullable=False, default=0),
)

divergent_events = Table(
    "audit_divergent_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("set_aside_at", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),  # the epoch under which they were written
    Column("position", BigInteger, nullable=False),
    Column("originator_id", String(36), nullable=False),
    Column("originator_version", BigInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("hash", String(64)),
)

# Distributed sites (several processes share one store): what the site controller has put
# into effect (the record changes first; raters, RADIUS nodes and relays follow it).
site_serving = Table(
    "site_serving", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("role", String(16), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
)

# Distributed sites: where each accounting-topic partition's rater stood when the ledger's head
# was ``position`` (read in one snapshot). After a fence at common prefix C, the records before
# the offsets of the last checkpoint at or below C are in the shared log: only what follows
# them needs re-submitting.
site_checkpoints = Table(
    "site_checkpoints", metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("taken_at", BigInteger, nullable=False),
    Column("offsets", Text, nullable=False),  # JSON {"partition": next offset}
)

# Distributed sites: the re-submission still to do after a fence, per partition (durable, so a
# restart resumes it; rows are removed when it is done).
resubmission_plan = Table(
    "resubmission_plan", metadata,
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("end_offset", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class SiteRecord:
    name: str
    role: str
    epoch: int
    changed_at: int
    reason: str
    peer_epoch: int = 0
    peer_head: int = 0
    caught_up_at: int = 0
    resubmit_from: int = 0

    @property
    def active(self) -> bool:
        return self.role == "active"


def store_engine(app_name: str, *, data_dir: Path, database_url: str) -> Engine:
    """An SQLAlchemy engine on the database holding ``app_name``'s events."""
    if database_url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
        return create_engine(url, pool_size=2, max_overflow=3, pool_pre_ping=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    return create_engine(f"sqlite:///{data_dir / f'{app_name.lower()}.db'}", connect_args={"timeout": 30})


_hex32 = re.compile("[0-9a-f]{32}").fullmatch


def _uuid_text(value: Any) -> str:
    """``str(UUID(value))`` for a stored originator id (SQLite holds 32 lowercase hex digits,
    PostgreSQL gives a UUID), without making a UUID object from hex digits."""
    if type(value) is str and _hex32(value):
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return str(value if isinstance(value, UUID) else UUID(str(value)))


class EventTable:
    """The events table of one eventsourcing application, whichever the backend."""

    def __init__(self, engine: Engine, app_name: str) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.table = f"{app_name.lower()}_events" if self.postgres else "stored_events"
        self.snapshots = f"{app_name.lower()}_snapshots" if self.postgres else "stored_snapshots"
        self.tracking = f"{app_name.lower()}_tracking" if self.postgres else "tracking"
        self.id = "notification_id" if self.postgres else "rowid"
        self.dialect_qmark = engine.dialect.paramstyle == "qmark"

    def _oid(self, value: Any) -> UUID:
        return value if isinstance(value, UUID) else UUID(str(value))

    def select(self, conn: Connection, after: int, upto: int | None = None, limit: int = 1000
               ) -> list[tuple[int, UUID, int, str, bytes]]:
        """(position, originator_id, version, topic, state) after ``after``, ascending."""
        sql = (f"SELECT {self.id} AS position, originator_id, originator_version, topic, state "
               f"FROM {self.table} WHERE {self.id} > :after")
        params: dict[str, Any] = {"after": after, "limit": limit}
        if upto is not None:
            sql += f" AND {self.id} <= :upto"
            params["upto"] = upto
        rows = conn.execute(text(sql + f" ORDER BY {self.id} LIMIT :limit"), params).all()
        return [(int(r[0]), self._oid(r[1]), int(r[2]), str(r[3]), bytes(r[4])) for r in rows]

    def chain_rows(self, conn: Connection, after: int, limit: int) -> list[tuple[int, str, int, str, bytes]]:
        """What the chainer hashes: (position, originator id as str(UUID) gives it, version,
        topic, state) after ``after``, ascending. Read with the driver's own cursor and
        without UUID objects: at the chainer's rate, SQLAlchemy's rows and a UUID per event
        were a large share of its CPU."""
        mark = "?" if self.dialect_qmark else "%s"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(f"SELECT {self.id}, originator_id, originator_version, topic, state FROM {self.table} "
                           f"WHERE {self.id} > {mark} ORDER BY {self.id} LIMIT {mark}", (after, limit))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return [(position, _uuid_text(oid), version, topic, bytes(state))
                for position, oid, version, topic, state in rows]

    def max_position(self, conn: Connection) -> int:
        return int(conn.execute(text(f"SELECT MAX({self.id}) FROM {self.table}")).scalar() or 0)

    def positions_of(self, conn: Connection, originator_ids: Sequence[UUID]) -> list[int]:
        """Notification ids of the first event of each originator (intake records have one)."""
        found: list[int] = []
        for start in range(0, len(originator_ids), 500):
            chunk = originator_ids[start:start + 500]
            keys = {f"k{i}": (oid if self.postgres else oid.hex) for i, oid in enumerate(chunk)}
            marks = ",".join(f":{k}" for k in keys)
            found += [int(r[0]) for r in conn.execute(
                text(f"SELECT {self.id} FROM {self.table} WHERE originator_id IN ({marks})"), keys)]
        return found

    def insert_at(self, conn: Connection, events: Sequence[ChainedEvent]) -> None:
        """Insert events under their own notification ids (the standby's copy is a prefix)."""
        if self.postgres:
            conn.execute(text(f"LOCK TABLE {self.table} IN EXCLUSIVE MODE"))
            conn.execute(text(
                f"INSERT INTO {self.table} (notification_id, originator_id, originator_version, topic, state) "
                "VALUES (:position, :oid, :version, :topic, :state)"),
                [{"position": e.position, "oid": e.originator_id, "version": e.originator_version,
                  "topic": e.topic, "state": e.state} for e in events])
            self.sync_sequence(conn)
        else:
            conn.execute(text(
                f"INSERT INTO {self.table} (rowid, originator_id, originator_version, topic, state) "
                "VALUES (:position, :oid, :version, :topic, :state)"),
                [{"position": e.position, "oid": e.originator_id.hex, "version": e.originator_version,
                  "topic": e.topic, "state": e.state} for e in events])

    def sync_sequence(self, conn: Connection) -> None:
        """PostgreSQL: the next id the store issues follows the highest one held."""
        if self.postgres:
            conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{self.table}', 'notification_id'), "
                f"GREATEST(COALESCE(MAX(notification_id), 0), 1), MAX(notification_id) IS NOT NULL) "
                f"FROM {self.table}"))

    def delete_after(self, conn: Connection, position: int) -> int:
        return int(conn.execute(text(f"DELETE FROM {self.table} WHERE {self.id} > :p"), {"p": position}).rowcount)

    def rewind_tracking(self, conn: Connection, followers: Sequence[str], position: int) -> None:
        """Followers of this very log that record their position here (the enforcer) go back to
        ``position``, so events later inserted above it are not skipped. Works for single-row
        and multi-row tracking tables alike."""
        for name in followers:
            removed = conn.execute(text(f"DELETE FROM {self.tracking} WHERE application_name = :n "
                                        "AND notification_id > :p"), {"n": name, "p": position}).rowcount
            left = conn.execute(text(f"SELECT COUNT(*) FROM {self.tracking} WHERE application_name = :n"),
                                {"n": name}).scalar()
            if removed and not left and position > 0:
                conn.execute(text(f"INSERT INTO {self.tracking} (application_name, notification_id) VALUES (:n, :p)"),
                             {"n": name, "p": position})

    def drop_snapshots(self, conn: Connection) -> None:
        """Snapshots are an optimisation and may hold state from a discarded tail."""
        try:
            with conn.begin_nested():
                conn.execute(text(f"DELETE FROM {self.snapshots}"))
        except Exception:  # no snapshot table yet: nothing to drop
            pass


class LedgerStore:
    """The ledger's event store with the wispgate-owned tables beside it."""

    def __init__(self, engine: Engine, app_name: str = "ledger") -> None:
        self.engine = engine
        self.events = EventTable(engine, app_name)
        for attempt in range(5):
            try:
                metadata.create_all(engine)
                break
            except DBAPIError:  # another process created them at the same moment (PostgreSQL catalog race)
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @classmethod
    def open(cls, *, data_dir: Path, database_url: str) -> LedgerStore:
        return cls(store_engine("ledger", data_dir=data_dir, database_url=database_url))

    def close(self) -> None:
        self.engine.dispose()

    # ---- chain ---------------------------------------------------------------------------

    def chain_head(self, conn: Connection | None = None) -> tuple[int, str]:
        """(position, hash) of the last chained event; (0, GENESIS) when nothing is."""
        if conn is None:
            with self.engine.connect() as own:
                return self.chain_head(own)
        # Plain SQL: the chainer asks before every batch, and building the statement cost
        # more than running it.
        row = conn.exec_driver_sql("SELECT position, hash FROM log_chain ORDER BY position DESC LIMIT 1").first()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def hash_at(self, position: int) -> str | None:
        if position == 0:
            return GENESIS
        with self.engine.connect() as conn:
            value = conn.execute(select(log_chain.c.hash).where(log_chain.c.position == position)).scalar()
        return None if value is None else str(value)

    def chained_positions(self, after: int = 0, limit: int = 100_000) -> list[int]:
        with self.engine.connect() as conn:
            return [int(p) for p in conn.execute(select(log_chain.c.position).where(log_chain.c.position > after)
                                                 .order_by(log_chain.c.position).limit(limit)).scalars()]

    def append_links(self, links: Sequence[tuple[int, str, str]]) -> None:
        """Store (position, prev_hash, hash) links in one transaction (IntegrityError if a
        position is linked already)."""
        if links:
            mark = "?" if self.events.dialect_qmark else "%s"
            with self.engine.begin() as conn:
                # The driver's executemany: building a dict per link for SQLAlchemy's insert cost
                # more than the insert.
                conn.exec_driver_sql(
                    f"INSERT INTO log_chain (position, prev_hash, hash) VALUES ({mark}, {mark}, {mark})", list(links))

    def chained_events(self, after: int = 0, limit: int = 1000, *, upto: int | None = None) -> list[ChainedEvent]:
        """Events with their links, only where both exist (what the active site ships)."""
        with self.engine.connect() as conn:
            rows = self.events.select(conn, after, upto, limit)
            if not rows:
                return []
            links = {int(r.position): r for r in conn.execute(select(log_chain).where(
                log_chain.c.position > after, log_chain.c.position <= rows[-1][0]))}
        out = []
        for position, oid, version, topic, state in rows:
            found = links.get(position)
            if found is None:
                break  # not chained yet: ship it next time
            out.append(ChainedEvent(position, oid, version, topic, state, found.prev_hash, found.hash))
        return out

    def walk(self, batch: int = 2000) -> Iterator[tuple[int, tuple[int, UUID, int, str, bytes] | None,
                                                         tuple[str, str] | None]]:
        """Every position present in the events or the chain, ascending, with what each holds."""
        after = 0
        while True:
            with self.engine.connect() as conn:
                rows = self.events.select(conn, after, None, batch)
                upto = rows[-1][0] if len(rows) == batch else None
                chain_query = select(log_chain).where(log_chain.c.position > after)
                if upto is not None:
                    chain_query = chain_query.where(log_chain.c.position <= upto)
                links = {int(r.position): (r.prev_hash, r.hash) for r in conn.execute(chain_query)}
            events = {row[0]: row for row in rows}
            for position in sorted(set(events) | set(links)):
                yield position, events.get(position), links.get(position)
            if upto is None:
                return
            after = upto

    # ---- replication ---------------------------------------------------------------------

    def append_replicated(self, events: Sequence[ChainedEvent]) -> None:
        """Insert verified events from the active site with their links, in one transaction."""
        with self.engine.begin() as conn:
            self.events.insert_at(conn, events)
            conn.execute(insert(log_chain), [{"position": e.position, "prev_hash": e.prev_hash, "hash": e.hash}
                                             for e in events])

    def events_after(self, position: int) -> list[tuple[int, UUID, int, str, bytes]]:
        with self.engine.connect() as conn:
            return self.events.select(conn, position, None, 10**9)

    def set_aside_after(self, position: int, epoch: int, resubmit_from: int = 0,
                        followers: Sequence[str] = (),
                        also: Callable[[Connection], None] | None = None) -> list[ChainedEvent]:
        """Copy every event after ``position`` to audit_divergent_events, then remove them (and
        their links, and all snapshots) from the live log, and note from where raw records
        must be re-submitted, all in one transaction. Returns what was set aside."""
        now = int(time.time())
        with self.engine.begin() as conn:
            if resubmit_from:
                conn.execute(site_state.update().where(site_state.c.id == 1).values(resubmit_from=resubmit_from))
            aside: list[ChainedEvent] = []
            after = position
            while rows := self.events.select(conn, after, None, 5000):
                links = {int(r.position): r for r in conn.execute(select(log_chain).where(
                    log_chain.c.position > after, log_chain.c.position <= rows[-1][0]))}
                for pos, oid, version, topic, state in rows:
                    link = links.get(pos)
                    aside.append(ChainedEvent(pos, oid, version, topic, state,
                                              link.prev_hash if link else "", link.hash if link else ""))
                after = rows[-1][0]
            if aside:
                conn.execute(insert(divergent_events), [
                    {"set_aside_at": now, "epoch": epoch, "position": e.position, "originator_id": str(e.originator_id),
                     "originator_version": e.originator_version, "topic": e.topic, "state": e.state,
                     "hash": e.hash or None} for e in aside])
            self.events.delete_after(conn, position)
            conn.execute(delete(log_chain).where(log_chain.c.position > position))
            self.events.rewind_tracking(conn, followers, position)
            self.events.drop_snapshots(conn)
            if also is not None:  # e.g. the distributed relay's rewind, in the same transaction
                also(conn)
        return aside

    def divergent_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(divergent_events)).scalar() or 0)

    def head_position(self) -> int:
        with self.engine.connect() as conn:
            return self.events.max_position(conn)

    def rewind_followers(self, followers: Sequence[str], position: int) -> None:
        with self.engine.begin() as conn:
            self.events.rewind_tracking(conn, followers, position)

    def sync_sequence(self) -> None:
        with self.engine.begin() as conn:
            self.events.sync_sequence(conn)

    # ---- site record ---------------------------------------------------------------------

    def site(self, *, default_name: str, default_role: str) -> SiteRecord:
        """The durable site record, created on first use from the configured defaults."""
        with self.engine.begin() as conn:
            row = conn.execute(select(site_state).where(site_state.c.id == 1)).first()
            if row is None:
                epoch, now = (1 if default_role == "active" else 0), int(time.time())
                conn.execute(insert(site_state).values(id=1, name=default_name, role=default_role, epoch=epoch,
                                                       changed_at=now, reason="configured"))
                return SiteRecord(default_name, default_role, epoch, now, "configured")
        return SiteRecord(row.name, row.role, int(row.epoch), int(row.changed_at), row.reason,
                          int(row.peer_epoch), int(row.peer_head), int(row.caught_up_at), int(row.resubmit_from))

    def set_site(self, *, role: str, epoch: int, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(site_state.update().where(site_state.c.id == 1).values(
                role=role, epoch=epoch, changed_at=int(time.time()), reason=reason))

    def note_peer(self, **values: int) -> None:
        """Remember peer_epoch / peer_head / caught_up_at / resubmit_from."""
        with self.engine.begin() as conn:
            conn.execute(site_state.update().where(site_state.c.id == 1).values(**values))

    def link_at_index(self, index: int) -> tuple[int, str] | None:
        """The ``index``-th chained position (0-based) and its hash."""
        with self.engine.connect() as conn:
            row = conn.execute(select(log_chain.c.position, log_chain.c.hash).order_by(log_chain.c.position)
                               .offset(index).limit(1)).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def chain_length(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(log_chain)).scalar() or 0)

    # ---- distributed sites -----------------------------------------------------------------

    def note_serving(self, role: str, epoch: int) -> None:
        """What the site controller has put into effect (``serving_as`` in /v1/site)."""
        with self.engine.begin() as conn:
            done = conn.execute(site_serving.update().where(site_serving.c.id == 1).values(
                role=role, epoch=epoch, at=int(time.time())))
            if done.rowcount == 0:
                conn.execute(insert(site_serving).values(id=1, role=role, epoch=epoch, at=int(time.time())))

    def serving(self) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(site_serving.c.role).where(site_serving.c.id == 1)).scalar()
        return None if value is None else str(value)

    def take_checkpoint(self, tracking_prefix: str) -> int:
        """Note the ledger head with the rater offsets of the accounting topic (tracking names
        ``<topic>:<partition>``), from one snapshot; returns the head (0: nothing noted)."""
        with self.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            head = self.events.max_position(conn)
            rows = conn.execute(text(
                f"SELECT application_name, MAX(notification_id) FROM {self.events.tracking} "
                "WHERE application_name LIKE :prefix GROUP BY application_name"),
                {"prefix": tracking_prefix + ":%"}).all()
        offsets = {name.rsplit(":", 1)[1]: int(offset) for name, offset in rows}
        if not head or not offsets:
            return 0
        with self.engine.begin() as conn:
            exists = conn.execute(select(site_checkpoints.c.position).where(
                site_checkpoints.c.position == head)).first()
            if exists is None:
                conn.execute(insert(site_checkpoints).values(position=head, taken_at=int(time.time()),
                                                             offsets=json.dumps(offsets)))
            # Two days of checkpoints bound the search; a standby lagging more re-sends more.
            conn.execute(delete(site_checkpoints).where(site_checkpoints.c.taken_at < int(time.time()) - 172800))
        return head

    def checkpoint_at_or_before(self, position: int) -> dict[int, int]:
        """Rater offsets (partition -> next offset) of the last checkpoint at or below ``position``
        ({} when there is none: re-submit from the start of the topic)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(site_checkpoints.c.offsets).where(site_checkpoints.c.position <= position)
                                 .order_by(site_checkpoints.c.position.desc()).limit(1)).scalar()
        return {} if value is None else {int(p): int(o) for p, o in json.loads(value).items()}

    def resubmission_pending(self) -> dict[int, tuple[int, int]]:
        """partition -> (next offset, end offset) still to re-submit."""
        with self.engine.connect() as conn:
            return {int(r.partition): (int(r.next_offset), int(r.end_offset))
                    for r in conn.execute(select(resubmission_plan))}

    def resubmitted_upto(self, partition: int, next_offset: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(resubmission_plan.update().where(resubmission_plan.c.partition == partition)
                         .values(next_offset=next_offset))

    def clear_resubmission(self, conn: Connection | None = None) -> None:
        if conn is None:
            with self.engine.begin() as own:
                self.clear_resubmission(own)
            return
        conn.execute(delete(resubmission_plan))
        conn.execute(site_state.update().where(site_state.c.id == 1).values(resubmit_from=0))

    def set_tracking(self, conn: Connection, name: str, position: int) -> None:
        """Move a follower's tracked position (a rater's partition offset) to ``position``,
        forward or back (the site's raters are stopped while this is done)."""
        conn.execute(text(f"DELETE FROM {self.events.tracking} WHERE application_name = :n"), {"n": name})
        conn.execute(text(f"INSERT INTO {self.events.tracking} (application_name, notification_id) "
                          "VALUES (:n, :p)"), {"n": name, "p": position})
