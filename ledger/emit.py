"""Triggering an aggregate's ``@event`` without eventsourcing's per-call machinery.

Calling a method decorated with ``@event`` binds a decorator object, turns positional
arguments into keywords, filters them by the event's fields twice, builds the frozen event
one ``object.__setattr__`` per field and applies it through more filtering: about a third of
the rater's time per accounting record. ``emit`` does the same with none of that: the event
is an instance of the very class the decorator made (same topic, same fields in the same
order, so the same stored bytes), and it is applied by calling the decorated method's own
body, which is what replaying it does. ``tests/test_emit.py`` checks that both paths give
equal events, stored bytes and aggregate state.

The rater's hot events use it; everything else keeps the decorator (clearer, and not hot).
``create`` does the same for a new aggregate (what calling its class does through
eventsourcing's metaclass: positional arguments turned into keywords, the id's parameters
filtered out, the event built through its dataclass ``__init__``, the aggregate through the
event's ``mutate``, which filters the event's fields twice more): a session is created for
every Start the rater applies.

``snapshots_due`` lets the rater take a snapshot at an interval version reached in the middle
of a batch from memory, as the event is emitted, instead of replaying the aggregate from the
store after the batch (an open-session registry passes several such versions per batch).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.domain import (
    Aggregate,
    CanMutateAggregate,
    Snapshot,
    _created_event_classes,
    _init_mentions_id,
    datetime_now_with_tzinfo,
    decorated_funcs,
)
from eventsourcing.utils import get_topic

_watch = threading.local()


class DueSnapshots:
    """Snapshots of aggregates at the interval versions their emitted events reached."""

    def __init__(self, intervals: dict[type, int], snapshot_class: type = Snapshot,
                 freeze: Callable[[Any], Any] = copy.deepcopy) -> None:
        self.intervals = intervals
        self.snapshot_class = snapshot_class
        self.freeze = freeze
        self.taken: dict[tuple[UUID, int], Any] = {}

    def check(self, aggregate: Aggregate, version: int) -> None:
        interval = self.intervals.get(type(aggregate))
        if interval and version % interval == 0:
            snapshot_class: Any = getattr(type(aggregate), "Snapshot", None) or self.snapshot_class
            # Frozen now (deep-copied, or encoded as stored): the aggregate's dicts keep changing.
            self.taken[(aggregate.id, version)] = self.freeze(snapshot_class.take(aggregate))


@contextmanager
def snapshots_due(intervals: dict[type, int], snapshot_class: type = Snapshot,
                  freeze: Callable[[Any], Any] = copy.deepcopy) -> Iterator[DueSnapshots]:
    """While open, each event ``emit`` makes on this thread that brings an aggregate of a
    class in ``intervals`` to a multiple of its interval has its snapshot at that version
    taken and frozen by ``freeze`` (into the yielded ``DueSnapshots``)."""
    due = DueSnapshots(intervals, snapshot_class, freeze)
    previous = getattr(_watch, "due", None)
    _watch.due = due
    try:
        yield due
    finally:
        _watch.due = previous


@cache
def _layout(event_class: type) -> tuple[tuple[str, ...], Callable[..., None]]:
    """The event's own field names in declaration order, and the body that applies it."""
    names = tuple(f.name for f in dataclasses.fields(event_class))
    assert names[:3] == ("originator_id", "originator_version", "timestamp"), names
    return names[3:], decorated_funcs[event_class]


@cache
def _created_layout(aggregate_class: type) -> tuple[Any, tuple[str, ...], frozenset[str], str] | None:
    """The class's "created" event class, its own field names in declaration order and the
    aggregate's topic; None when creating it takes more than its ``__init__`` body (an
    explicit topic to check, an ``id`` parameter, an ``apply`` on the event, a choice of
    created events), so that ``create`` leaves it to the metaclass."""
    created = _created_event_classes.get(aggregate_class, [])
    if len(created) != 1 or getattr(aggregate_class, "TOPIC", None) or aggregate_class in _init_mentions_id:
        return None
    event_class: Any = created[0]
    if event_class.apply is not CanMutateAggregate.apply:
        return None
    names = tuple(f.name for f in dataclasses.fields(event_class))
    assert names[:4] == ("originator_id", "originator_version", "timestamp", "originator_topic"), names
    return event_class, names[4:], frozenset(names[4:]), get_topic(aggregate_class)


def create(aggregate_class: Any, originator_id: UUID, **fields: Any) -> Any:
    """A new ``aggregate_class`` named ``originator_id`` (what its ``create_id`` gives for
    ``fields``), with its "created" event pending: what ``aggregate_class(**fields)`` makes,
    ``fields`` being every argument of its ``__init__`` by name."""
    layout = _created_layout(aggregate_class)
    if layout is None or fields.keys() != layout[2]:  # (defaults, unknown names: its errors)
        return aggregate_class(**fields)
    event_class, names, _, topic = layout
    version = aggregate_class.INITIAL_VERSION
    timestamp = datetime_now_with_tzinfo()
    event = event_class.__new__(event_class)
    state = event.__dict__  # in the dataclass's field order, as emit() writes (the stored bytes)
    state["originator_id"] = originator_id
    state["originator_version"] = version
    state["timestamp"] = timestamp
    state["originator_topic"] = topic
    for name in names:
        state[name] = fields[name]
    aggregate = aggregate_class.__new__(aggregate_class)
    aggregate.__base_init__(originator_id, version, timestamp)
    aggregate_class.__init__(aggregate, **fields)
    aggregate._pending_events.append(event)  # noqa: SLF001 - what BaseAggregate._create does
    return aggregate


def emit(aggregate: Aggregate, event_class: Any, **fields: Any) -> None:
    """Trigger ``event_class`` (an ``@event`` method's event class of ``aggregate``'s type)
    with ``fields`` (all of its fields, by name): the next event of the aggregate, applied to
    it and left pending, as calling the decorated method would."""
    names, apply = _layout(event_class)
    version = aggregate.version + 1
    timestamp = datetime_now_with_tzinfo()
    event = event_class.__new__(event_class)
    # A frozen dataclass blocks attribute assignment, not its __dict__; the mapper stores
    # vars(event) in insertion order, so the order here is the dataclass's.
    state = event.__dict__
    state["originator_id"] = aggregate.id
    state["originator_version"] = version
    state["timestamp"] = timestamp
    for name in names:
        state[name] = fields[name]
    if len(fields) != len(names):
        unknown = set(fields) - set(names)
        raise TypeError(f"{event_class.__qualname__} has no field(s) {sorted(unknown)}")
    apply(aggregate, **fields)
    aggregate._version = version  # noqa: SLF001 - what CanMutateAggregate.mutate sets
    aggregate._modified_on = timestamp  # noqa: SLF001
    aggregate._pending_events.append(event)  # noqa: SLF001
    due: DueSnapshots | None = getattr(_watch, "due", None)
    if due is not None:
        due.check(aggregate, version)
