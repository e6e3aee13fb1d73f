"""`wispgate token create`: issue an API token (printed once, alone on the last line)."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from typing import Any
from uuid import UUID

from ledger.access import ROLES

from ..settings import Settings
from .common import add_store_options


def register(commands: Any) -> None:
    token = commands.add_parser("token", help="API tokens")
    sub = token.add_subparsers(dest="token_command", required=True)
    create = sub.add_parser("create", help="issue a token; it is printed once, alone on the last line")
    add_store_options(create)
    create.add_argument("--role", required=True, choices=list(ROLES))
    create.add_argument("--account", help="account id (portal tokens only)")
    create.add_argument("--label", default="", help="a note on who or what uses it")
    create.set_defaults(handler=create_token)


def create_token(settings: Settings, args: argparse.Namespace) -> int:
    from ..bootstrap import build_runtime

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
