"""The `wispgate` command line: commands are discovered in `api.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import commands
from .commands.common import settings_from
from .logs import configure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wispgate", description="WISPGate Ledger: billing and rating for WISPs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except (ValueError, OSError) as error:
        print(f"wispgate: configuration error: {error}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    handler = getattr(args, "handler", None)
    if handler is None:
        build_parser().print_help()
        return 2
    return int(handler(settings, args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
