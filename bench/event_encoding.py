"""Instructions per event of encoding the rater's events (the mapper's ``to_stored_event``).

The rater's own events are made by rating the freshness load's shape (``bench.rater_cpu``'s
store and records, 300 subscribers by default) and read back from the store as domain events
(with the snapshots the rating took); then every one of them is encoded ``--repeat`` times by
the ledger's mapper. The figure to trust on a shared machine is the instruction count:

    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.event_encoding [--baseline]

run minus ``--baseline`` (everything but the encoding), divided by the events encoded (printed).
The CPU time per event by class is printed too (moves with the neighbours).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from api.bootstrap import build_runtime
from api.settings import Settings
from domain.ids import nas_address_id

from .rater_cpu import _chunks, _provision, _rate, _records
from .workload import build_sessions


def rater_events(sessions: int, template: Path | None) -> list[Any]:
    """The domain events (and snapshots) that rating a warm-up and a paced load records."""
    data_dir = Path(tempfile.mkdtemp(prefix="wispgate-encoding-"))
    _provision(data_dir, sessions, template)
    runtime = build_runtime(Settings(data_dir=data_dir))
    try:
        ledger = runtime.ledger
        start = (ledger.recorder.max_notification_id() or 0) + 1
        nas_id = str(nas_address_id("127.0.0.1"))
        for tag, seed in (("W", 1), ("P", 7920)):
            for chunk in _chunks(_records(build_sessions(sessions, 3, seed=seed, tag=tag), nas_id)):
                runtime.intake.append(chunk)
            _rate(runtime, 100)
        stored = ledger.recorder.select_notifications(start=start, limit=10**7)
        mapper = ledger.mapper
        events = [mapper.to_domain_event(s) for s in stored]
        snapshots = ledger.snapshots.recorder.select_events if ledger.snapshots else None
        if snapshots is not None:
            ids = {e.originator_id for e in events}
            for originator_id in ids:
                events += [mapper.to_domain_event(s) for s in snapshots(originator_id)]
        return [_as_emitted(e) for e in events]
    finally:
        runtime.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _as_emitted(event: Any) -> Any:
    """``event`` with its fields in the order of a new event (a decoded one has its originator
    id and version last: the mapper writes the same bytes, its generated encoders do not apply)."""
    state = vars(event)
    emitted = object.__new__(type(event))
    object.__setattr__(emitted, "__dict__", {"originator_id": state["originator_id"],
                                             "originator_version": state["originator_version"]} | state)
    return emitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--template", type=Path, default=None, metavar="DIR")
    parser.add_argument("--baseline", action="store_true", help="everything but the encoding")
    args = parser.parse_args()
    events = rater_events(args.sessions, args.template)
    runtime = build_runtime(Settings(data_dir=Path(tempfile.mkdtemp(prefix="wispgate-encoding-mapper-"))))
    mapper = runtime.ledger.mapper
    encode = mapper.to_stored_event
    kinds = Counter(type(e).__qualname__ for e in events)
    cpu: Counter[str] = Counter()
    if not args.baseline:
        for _ in range(args.repeat):
            for event in events:
                started = time.process_time()
                encode(event)
                cpu[type(event).__qualname__] += time.process_time() - started
    runtime.close()
    print(f"events encoded: {len(events) * args.repeat} ({len(events)} x {args.repeat}); "
          f"mapper {type(mapper).__module__}.{type(mapper).__qualname__}")
    for kind, count in kinds.most_common():
        print(f"  {kind}: {count} events, {cpu[kind] / (count * args.repeat) * 1e6:,.1f} us each")


if __name__ == "__main__":
    main()
