"""One rebuild of every read model from position 0 of an existing store, in this fresh process,
as the bench's replay row runs it, with CPU times: wall events/s, CPU of this process and of the
forked second process (if any), peak RSS of each.

    python -m bench.replay_cpu DATA_DIR [auto|two|one] [DATABASE_URL] [--share DIGITS]

``two`` forks the second process even when no core looks idle (a loaded machine; run it at
raised priority, e.g. ``chrt -f 10``, for wall figures like an idle machine's), ``one`` keeps the
fold in one process, ``auto`` decides as the product does. The store's read models are rebuilt
in place: use a copy of a bench store (e.g. ``bench/out/embedded/run0/var``), one run at a time.
``--share`` sets the accounts (last hex digits of their ids, e.g. ``012345``; ``-``: none) whose
rated usages the second process folds whole (``projections.fold.SECOND_SHARE``), for tuning it.

A/B against older code: ``git worktree add --detach /tmp/wt <commit>``, then run it from that
tree with ``PYTHONPATH=/tmp/wt`` (``python -m`` puts the current directory first on sys.path, so
run from /work/main it measures /work/main whatever PYTHONPATH says), alternating the trees and
copying the store afresh for each run.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path


def main() -> None:
    share = None
    if "--share" in sys.argv:
        at = sys.argv.index("--share")
        share = frozenset(sys.argv[at + 1].strip("-"))
        del sys.argv[at:at + 2]
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    if share is not None:
        from projections import rebuild

        rebuild.SECOND_SHARE = share
    mode = sys.argv[2] if len(sys.argv) > 2 else "auto"
    from ledger import cores

    if mode in ("two", "one"):
        cores.second_core_free = lambda: mode == "two"  # type: ignore[assignment]
    from api.bootstrap import build_runtime
    from api.settings import Settings

    runtime = build_runtime(Settings(data_dir=Path(sys.argv[1]),
                                     database_url=sys.argv[3] if len(sys.argv) > 3 else ""))
    try:
        runtime.projector.reset()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, started = time.process_time(), time.perf_counter()
        events = runtime.projector.rebuild(runtime.ledger.recorder)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        second = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        print(f"events={events} wall={seconds:.3f} cpu_main={cpu:.3f} cpu_child={second:.3f} "
              f"rate={events / seconds:.0f} rss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
              f"crss={after.ru_maxrss / 1024:.0f}")
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
