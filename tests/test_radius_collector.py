"""The RADIUS child settles the cyclic collector once started (``settle_collector``): what
exists then is frozen, the youngest generation is collected every ``COLLECT_AFTER`` containers
rather than CPython's 700, and cyclic garbage made afterwards is still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.radius import worker


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_the_settled_collector_freezes_start_up_and_collects_rarely(collector: None) -> None:
    older = gc.get_threshold()[1:]
    worker.settle_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (worker.COLLECT_AFTER, *older)
    assert worker.COLLECT_AFTER > 700
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None, "cyclic garbage made after settling was not collected"


def _gen0_collections(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith('python_gc_collections_total{generation="0"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("the child reports no collector counts")


def test_the_radius_child_settles_its_collector(tmp_path: Path) -> None:
    """The child as ``serve`` runs it, under a few hundred records: its youngest generation is
    collected at most once (every ~20 records at CPython's threshold)."""
    from api.logs import configure
    from api.settings import Settings
    from bench.loadgen import run_load
    from bench.radius_cpu import SECRET, _provision
    from bench.target import free_port
    from bench.workload import build_sessions

    _provision(tmp_path / "var")
    port = free_port(2)
    settings = Settings(data_dir=tmp_path / "var", radius_port=port, log_level="warning", database_url="")
    child = worker.RadiusWorker(settings, on_durable=lambda: None, on_failed=lambda _: None,
                                configure_logging=configure)
    child.launch()
    assert child.start() is None
    try:
        before = _gen0_collections(child.metrics_text())
        load = asyncio.run(run_load("127.0.0.1", port, SECRET, build_sessions(100, 3, seed=1, tag="gc"),
                                    inflight=16, timeout=5.0))
        assert load.acknowledged == 500
        assert _gen0_collections(child.metrics_text()) - before <= 1
    finally:
        child.close()
