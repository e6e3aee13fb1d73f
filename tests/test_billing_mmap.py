"""Billing runs map the SQLite read models into memory while they run
(``adapters.billing_runs._read_models_mapped``). Runs may overlap in one process (the API's
billing endpoint, the CLI, the tests' concurrent runs), and every other thread keeps checking
connections out of the same engine meanwhile: entering and leaving a run must not touch
what a checkout is reading (SQLAlchemy's listener collections are not safe to change while
another thread fires them: "deque mutated during iteration")."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from adapters.billing_runs import _read_models_mapped


def mmap_size(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("PRAGMA mmap_size")).scalar_one())


def test_overlapping_runs_and_checkouts_never_collide(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}", pool_size=8)
    errors: list[BaseException] = []
    stop = threading.Event()

    def runs() -> None:
        try:
            for _ in range(300):
                with _read_models_mapped(engine), engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
        except BaseException as error:  # noqa: BLE001 - surfaced below
            errors.append(error)

    def reader() -> None:
        try:
            while not stop.is_set():
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
        except BaseException as error:  # noqa: BLE001 - surfaced below
            errors.append(error)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    runners = [threading.Thread(target=runs) for _ in range(3)]
    for thread in readers + runners:
        thread.start()
    for thread in runners:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors, errors[:3]


def test_connections_are_mapped_during_a_run_only(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}", poolclass=NullPool)
    assert mmap_size(engine) == 0
    with _read_models_mapped(engine):
        assert mmap_size(engine) > 0
        with _read_models_mapped(engine):  # an overlapping run
            assert mmap_size(engine) > 0
        assert mmap_size(engine) > 0  # the first run still runs
    assert mmap_size(engine) == 0
