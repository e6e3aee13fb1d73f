"""`wispgate audit verify|replay|balance|export`: the auditor's commands. They work on a live
store (the configured data directory or database) or, for verify and replay, on an exported
log file alone."""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from ..settings import Settings
from .common import add_store_options, parse_moment


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="verify the hash chain, replay the log, point-in-time figures")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = sub.add_parser("verify", help="check the ledger log's hash chain; prints the head hash")
    add_store_options(verify)
    verify.add_argument("--file", type=Path, help="an exported log (no live system needed)")
    verify.set_defaults(handler=verify_command)

    replay = sub.add_parser("replay", help="rebuild every read model from position 0 and compare with the live ones")
    add_store_options(replay)
    replay.add_argument("--file", type=Path, help="replay an exported log instead of the live store")
    replay.add_argument("--scratch-url", default="",
                        help="database for the rebuilt read models (default: a temporary SQLite file)")
    replay.set_defaults(handler=replay_command)

    balance = sub.add_parser("balance", help="an account's balance, usage and open sessions as of a moment")
    add_store_options(balance)
    balance.add_argument("--account", required=True)
    balance.add_argument("--at", required=True, help="epoch seconds or ISO 8601, e.g. 2026-11-18T12:00:00Z")
    balance.set_defaults(handler=balance_command)

    export = sub.add_parser("export", help="write the chained log to a self-contained file for auditors")
    add_store_options(export)
    export.add_argument("--out", required=True, type=Path)
    export.set_defaults(handler=export_command)


def _print_verdict(verdict: Any, unchained: int = 0) -> int:
    if verdict.ok:
        print(f"chain OK: {verdict.checked} events, head position {verdict.head_position}")
        print(f"head hash {verdict.head_hash}")
        if unchained:
            print(f"{unchained} newest events are not chained yet (the site chains them within a second)")
        return 0
    print(f"chain BROKEN at position {verdict.broken_at}: {verdict.reason} "
          f"({verdict.checked} events before it verified)")
    return 1


def verify_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.audit import ExportFile, verify_events, verify_store
    from adapters.event_log import LedgerStore

    if args.file:
        try:
            export = ExportFile(args.file)
            verdict = verify_events(export.events())
        except (OSError, ValueError) as error:
            print(f"wispgate: {error}", file=sys.stderr)
            return 2
        code = _print_verdict(verdict)
        trailer = export.trailer
        if verdict.ok and (trailer is None or trailer.get("head_hash", "") != (verdict.head_hash if
                                                                              verdict.checked else "")):
            print("the file is truncated or its trailer does not match its last event")
            return 1
        print(f"exported by site {export.header.get('site')} (epoch {export.header.get('epoch')})")
        return code
    store = LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url)
    try:
        result = verify_store(store)
    finally:
        store.close()
    return _print_verdict(result.verdict, result.unchained)


def _scratch_engine(url: str) -> Any:
    if url:
        from adapters.persistence import read_model_engine

        return read_model_engine(data_dir=Path("."), database_url=url)
    scratch = Path(tempfile.mkdtemp(prefix="wispgate-replay-")) / "replay.db"
    print(f"rebuilding into {scratch}", file=sys.stderr)
    return create_engine(f"sqlite:///{scratch}")


def replay_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.audit import ExportFile, Progress, as_notification, replay
    from ledger import Ledger
    from projections import ReadModelProjector

    scratch = _scratch_engine(args.scratch_url)
    try:
        if args.file:
            decoder = Ledger()  # in memory: only its mapper is used, to decode the file's events
            projector = ReadModelProjector(scratch, decoder.mapper.to_domain_event)
            projector.create_tables()
            projector.reset()
            try:
                export = ExportFile(args.file)
                total = sum(1 for _ in export.events())
                progress = Progress(total)
                batches = _batched(as_notification(e) for e in export.events())
                done = replay(batches, projector, progress)
            except (OSError, ValueError) as error:
                print(f"wispgate: {error}", file=sys.stderr)
                return 2
            progress.finish()
            print(f"replayed {done} events from {args.file} at {progress.rate:,.0f} events/s; "
                  f"read models rebuilt in the scratch database")
            return 0
        return _replay_live(settings, scratch)
    finally:
        scratch.dispose()


def _batched(items: Any, size: int = 2000) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _replay_live(settings: Settings, scratch: Any) -> int:
    from adapters.audit import Progress, compare_table, model_tables, replay, store_batches
    from projections import ReadModelProjector

    from ..bootstrap import build_runtime

    runtime = build_runtime(settings)
    try:
        projector = ReadModelProjector(scratch, runtime.ledger.mapper.to_domain_event)
        projector.create_tables()
        projector.reset()
        done, position, elapsed = 0, 0, 0.0
        for _attempt in range(5):
            target = runtime.projector.position()
            progress = Progress(target - position)
            done += replay(store_batches(runtime.ledger, position, target), projector, progress)
            progress.finish()
            elapsed += progress.elapsed
            position = target
            diffs = [compare_table(runtime.engine, scratch, table) for table in model_tables(projector)]
            if runtime.projector.position() == target:
                break
            print("the live read models moved during the comparison; catching up and comparing again",
                  file=sys.stderr)
        print(f"replayed {done} events (positions 1..{position}) at {done / max(elapsed, 1e-9):,.0f} events/s")
        for diff in diffs:
            state = "equal" if diff.equal else (
                f"DIFFERENT: {diff.only_live} only live, {diff.only_replay} only in replay, {diff.changed} changed")
            print(f"  {diff.table:<22} live {diff.live_rows:>9}  replay {diff.replay_rows:>9}  {state}")
            for example in diff.examples:
                print(f"      {example}")
        if runtime.projector.position() != position:
            print("note: the site kept writing; differences may come from events after "
                  f"position {position}")
        different = [d.table for d in diffs if not d.equal]
        if different:
            print(f"read models differ from the replay in: {', '.join(different)}")
            return 1
        print("every read model equals its replay")
        return 0
    finally:
        runtime.close()


def balance_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.audit import account_as_of
    from domain.money import Money

    from ..bootstrap import build_runtime

    try:
        at = parse_moment(args.at, required=True)
    except ValueError:
        print(f"wispgate: not a timestamp: {args.at}", file=sys.stderr)
        return 2
    runtime = build_runtime(settings)
    try:
        figures = account_as_of(runtime.ledger, args.account, at)
    finally:
        runtime.close()
    when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    print(f"account {args.account} as of {when}")
    exact = format(figures.balance.normalize(), "f") if figures.balance else "0"
    shown = Money(figures.balance, figures.currency).rounded().amount if figures.currency else figures.balance
    print(f"  balance   {shown} {figures.currency} (exact {exact})")
    print(f"  usage     upload {figures.upload_bytes} bytes, download {figures.download_bytes} bytes")
    open_sessions = figures.open_sessions()
    print(f"  sessions  {len(open_sessions)} open")
    for session in open_sessions:
        started = datetime.fromtimestamp(session["started_at"], UTC).isoformat().replace("+00:00", "Z")
        print(f"    {session['session']} {session['username']} since {started}")
    return 0


def export_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.audit import export_log
    from adapters.event_log import LedgerStore

    store = LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url)
    try:
        site = store.site(default_name=settings.site, default_role=settings.site_role)
        with args.out.open("w") as out:
            count, head, head_hash = export_log(store, out, site=site.name, epoch=site.epoch)
    except OSError as error:
        print(f"wispgate: {error}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"exported {count} events to {args.out}; head position {head}")
    print(f"head hash {head_hash}")
    return 0
