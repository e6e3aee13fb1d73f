"""The write gate of a site: the rater writes ledger events only while the site is active,
and fencing (which rewrites the log's tail and rebuilds the read models) waits until no
stage is in the middle of a step, then runs alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

Step = Callable[[], int]


class RemoteFollower(Protocol):
    """A stage running in another process that the gate can pause (adapters/projector_worker.py)."""

    def pause(self) -> None:
        """Return once the stage runs no step and will start none until ``resume``."""

    def resume(self) -> None: ...


class WriteGate:
    """A readers-writer gate: stage steps share it, maintenance takes it exclusively."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._exclusive = False
        self.writes_open = True
        # Stages in other processes (serve's projector process): paused while the gate is
        # held exclusively, resumed after.
        self.remote_followers: list[RemoteFollower] = []

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No guarded step runs while this is held."""
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._running == 0)
        paused: list[RemoteFollower] = []
        try:
            for remote in self.remote_followers:
                remote.pause()
                paused.append(remote)
            yield
        finally:
            for remote in paused:
                remote.resume()
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def writer(self, step: Step) -> Step:
        """A step that writes ledger events: does nothing while writes are closed."""

        def guarded() -> int:
            with self.shared():
                return step() if self.writes_open else 0

        return guarded

    def follower(self, step: Step) -> Step:
        """A step that only follows the log (the projector): paused during maintenance."""

        def guarded() -> int:
            with self.shared():
                return step()

        return guarded


# ---- the same gate across processes (distributed mode) ----------------------------------------

SITE_GATE_LOCK = 0x77677374  # PostgreSQL advisory lock key ("wgst") of a site's write gate


class SiteView:
    """The site record as a writer step saw it under the lock."""

    def __init__(self, stamp: tuple[str, int, int] | None) -> None:
        self.stamp = stamp  # (role, epoch, changed_at); None: no record, nobody configured two sites

    @property
    def active(self) -> bool:
        return self.stamp is None or self.stamp[0] == "active"


class SiteWriteLock:
    """WriteGate across the processes of a distributed site, on a PostgreSQL advisory lock.

    Each rater batch holds the lock shared and re-reads the site record under it; the site
    controller holds it exclusively while it changes the site's role or sets a divergent tail
    aside, so no batch is half-way through then. PostgreSQL queues a shared request behind a
    waiting exclusive one, so the controller is not starved. A killed process's session ends
    and releases what it held."""

    def __init__(self, database_url: str, key: int = SITE_GATE_LOCK) -> None:
        self.database_url = database_url
        self.key = key
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=10)
        return self._conn

    @contextmanager
    def shared(self) -> Iterator[SiteView]:
        """Held for one writer step; yields the site's role as recorded (writes are allowed
        only while it is active)."""
        conn = self._connection()
        try:
            conn.execute("SELECT pg_advisory_lock_shared(%s)", (self.key,))
            # A statement of its own: its snapshot is taken after the lock was granted, so it
            # sees a role change the controller committed while this step waited.
            row = conn.execute("SELECT role, epoch, changed_at FROM site_state WHERE id = 1").fetchone()
        except Exception:
            self.close()  # a broken connection is replaced at the next step
            raise
        try:
            # No site record yet: nobody configured two sites, the site is active.
            yield SiteView(None) if row is None else SiteView((str(row[0]), int(row[1]), int(row[2])))
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock_shared(%s)", (self.key,))
            except Exception:
                self.close()  # closing the session releases the lock too

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No writer step of any process of the site runs while this is held."""
        conn = self._connection()
        conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:
                self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # already broken
                conn.close()


class Leadership:
    """One holder per key among the processes of a site (a session-level advisory lock,
    re-taken after a lost connection): e.g. the one site controller among several relays."""

    def __init__(self, database_url: str, key: int) -> None:
        self.database_url = database_url
        self.key = key
        self._conn: Any = None

    def held(self) -> bool:
        import psycopg

        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                self.release()
        try:
            conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
        except psycopg.Error:
            return False
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        if row is not None and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()
