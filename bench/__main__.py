"""`python -m bench [--smoke] [--runs 3] [--sessions N] [--inflight 64]`: the same seeded load
against FreeRADIUS+SQL and wispgate, medians over runs, one table, bench/RESULTS.md.

`make bench` runs the full benchmark (minutes); `--smoke` runs a few hundred records in
seconds (tests/test_bench_smoke.py runs it in `make test` so the harness cannot rot)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from .report import collect_machine, render, write_results
from .target import BenchConfig, Metrics, Target

HERE = Path(__file__).parent


def _targets(names: list[str]) -> list[Target]:
    from .freeradius import FreeRadiusSql
    from .wispgate_embedded import WispgateEmbedded

    chosen: list[Target] = []
    for name in names:
        if name == "freeradius":
            chosen.append(FreeRadiusSql())
        elif name == "embedded":
            chosen.append(WispgateEmbedded())
        elif name.startswith("distributed"):
            raters = int(name.split("-")[1]) if "-" in name else 1
            try:
                from .distributed import WispgateDistributed  # type: ignore[import-not-found,unused-ignore]
            except ImportError as error:
                chosen.append(_Unavailable(f"wispgate distributed, {raters} rater{'s' * (raters > 1)}",
                                           f"n/a (distributed mode not available: {error.name})"))
            else:
                chosen.append(WispgateDistributed(raters=raters))
        else:
            raise SystemExit(f"unknown target {name!r}")
    return chosen


class _Unavailable:
    """A column that could not be measured, with the reason in every cell."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def prepare(self, config: BenchConfig) -> None:
        return None

    def run(self, config: BenchConfig, index: int) -> Metrics:
        return {"_unavailable": self.reason}

    def versions(self) -> dict[str, str]:
        return {}


def parse_config(argv: list[str]) -> tuple[BenchConfig, list[str], Path]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few hundred records, one run, seconds")
    parser.add_argument("--runs", type=int, help="runs per target (median reported); default 3, smoke 1")
    parser.add_argument("--sessions", type=int, help="subscribers, one session each (default 20000)")
    parser.add_argument("--interims", type=int, help="Interim-Updates per session (default 3)")
    parser.add_argument("--inflight", type=int, help="requests in flight (default 64)")
    parser.add_argument("--freshness-seconds", type=float, help="length of the paced freshness load (default 10)")
    parser.add_argument("--distributed-runs", type=int, help="runs for the distributed columns (default --runs)")
    parser.add_argument("--history", type=int, help="closed sessions pre-filled in radacct (default 1000000)")
    parser.add_argument("--billing-accounts", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                        help="accounts in the two timed billing runs (default 10000 100000)")
    parser.add_argument("--targets", default="freeradius,embedded,distributed-1,distributed-2",
                        help="comma-separated: freeradius, embedded, distributed-1, distributed-2")
    parser.add_argument("--out", type=Path, help="working directory (default bench/out)")
    parser.add_argument("--results", type=Path, help="where to write the Markdown results "
                                                     "(default bench/RESULTS.md; smoke: <out>/RESULTS-smoke.md)")
    args = parser.parse_args(argv)
    config = BenchConfig()
    if args.smoke:
        config = replace(config, sessions=100, runs=1, history_closed=2_000, history_open=100,
                         freshness_rate=300.0, freshness_seconds=2.0, freshness_accounts=10,
                         billing_sizes=(100, 300), pdf_renders=3, smoke=True)
    overrides = {"runs": args.runs, "sessions": args.sessions, "interims": args.interims,
                 "inflight": args.inflight, "history_closed": args.history, "out": args.out,
                 "freshness_seconds": args.freshness_seconds, "distributed_runs": args.distributed_runs,
                 "billing_sizes": tuple(args.billing_accounts) if args.billing_accounts else None}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.history_closed and args.history is not None:
        config = replace(config, history_open=max(1, config.history_closed // 50))
    results = args.results or (config.out / "RESULTS-smoke.md" if config.smoke else HERE / "RESULTS.md")
    return config, [t.strip() for t in args.targets.split(",") if t.strip()], results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Stopped with SIGTERM (kill, a CI timeout): unwind like Ctrl-C, so each target's finally
    # blocks stop the servers they started (they were left running, holding ports and stores).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config, names, results_path = parse_config(argv)
    config.out.mkdir(parents=True, exist_ok=True)
    machine_before = collect_machine()
    targets = _targets(names)
    print(f"bench: {config.sessions:,} sessions x (Start + {config.interims} Interim + Stop) = "
          f"{config.records:,} records, {config.inflight} in flight, {config.runs} run(s) per target", flush=True)
    per_target: dict[str, list[Metrics]] = {}
    versions: dict[str, str] = {}
    started = time.monotonic()
    for target in targets:
        print(f"[{target.name}] preparing", flush=True)
        runs: list[Metrics] = []
        try:
            target.prepare(config)
            versions |= target.versions()
            count = config.runs
            if config.distributed_runs and target.name.startswith("wispgate distributed"):
                count = config.distributed_runs
            for index in range(count):
                print(f"[{target.name}] run {index + 1}/{count}", flush=True)
                metrics = target.run(config, index)
                runs.append(metrics)
                print(f"[{target.name}] run {index + 1}: "
                      + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in metrics.items() if k in ("ingest_rate", "pipeline_rate", "missing",
                                                                        "retransmissions", "freshness_p99",
                                                                        "replay_rate")), flush=True)
        except Exception as error:  # one broken target must not hide the others' figures
            traceback.print_exc()
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = (lines[0] if len(lines) < 2 else f"{lines[0][:60]} ... {lines[-1]}").replace("|", "/")[:200]
            runs.append({"_unavailable": f"n/a (failed: {type(error).__name__}: {reason})"})
        per_target[target.name] = runs
    table = render(per_target, config)
    print()
    print(table)
    command = "python -m bench " + " ".join(argv) if argv else "make bench  (python -m bench)"
    write_results(results_path, table, per_target, config, machine_before, collect_machine(), versions,
                  command, time.monotonic() - started)
    print(f"\nwritten to {results_path}")
    lost = [name for name, runs in per_target.items()
            for m in runs if isinstance(m.get("missing"), (int, float)) and m["missing"]]
    if lost:
        print(f"VERIFICATION FAILED: acknowledged records missing in {sorted(set(lost))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
