"""`serve`'s projector child settles the cyclic collector once started (``settle_collector``):
what exists then is frozen, the youngest generation is collected every ``COLLECT_AFTER``
containers rather than CPython's 700, and cyclic garbage made afterwards is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from adapters import projector_worker


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settled_collector_freezes_start_up_and_collects_rarely(collector: None) -> None:
    older = gc.get_threshold()[1:]
    projector_worker.settle_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (projector_worker.COLLECT_AFTER, *older)
    assert projector_worker.COLLECT_AFTER > 700
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None, "cyclic garbage made after settling was not collected"
