"""The `wispgate` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Sequence
from uuid import UUID

from .settings import Settings, load_settings

log = logging.getLogger("wispgate")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: $WISPGATE_CONFIG)")
    parser.add_argument("--data-dir", help="data directory for the embedded mode ($WISPGATE_DATA_DIR)")
    parser.add_argument("--database-url", help="postgresql:// URL instead of SQLite ($WISPGATE_DATABASE_URL)")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    return settings.with_overrides(
        data_dir=args.data_dir, database_url=args.database_url,
        radius_host=getattr(args, "radius_host", None), radius_port=getattr(args, "radius_port", None),
        api_host=getattr(args, "api_host", None), api_port=getattr(args, "api_port", None),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wispgate", description="WISPGate Ledger")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run RADIUS accounting, rating, read models and the API in one process")
    _common(serve)
    serve.add_argument("--radius-host", help="($WISPGATE_RADIUS_HOST, default 127.0.0.1)")
    serve.add_argument("--radius-port", type=int, help="($WISPGATE_RADIUS_PORT, default 1813)")
    serve.add_argument("--api-host", help="($WISPGATE_API_HOST, default 127.0.0.1)")
    serve.add_argument("--api-port", type=int, help="($WISPGATE_API_PORT, default 8000)")

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="issue a token; it is printed once, alone on the last line")
    _common(create)
    create.add_argument("--role", required=True, choices=["admin", "finance", "auditor", "portal"])
    create.add_argument("--account", help="account id (portal tokens only)")
    create.add_argument("--label", default="", help="a note on who or what uses it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except (ValueError, OSError) as error:
        print(f"wispgate: configuration error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.command == "serve":
        from .serve import serve

        return asyncio.run(serve(settings))
    if args.command == "token":
        return _token_create(settings, args)
    return 2


def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    from .bootstrap import build_runtime

    account_id = None
    if args.account:
        try:
            account_id = UUID(args.account)
        except ValueError:
            print(f"wispgate: not an account id: {args.account}", file=sys.stderr)
            return 2
    runtime = build_runtime(settings)
    try:
        token = "wg_" + secrets.token_urlsafe(32)
        runtime.ledger.issue_token(token=token, role=args.role, account_id=account_id,
                                   label=args.label, issued_at=int(time.time()))
    except Exception as error:  # NotFound / ValueError: say what, not a traceback
        print(f"wispgate: {error}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    print(f"Issued a {args.role} token. It is shown once; store it safely:")
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
