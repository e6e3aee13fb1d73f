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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command ``only`` alone (named like its module)."""
    parser = argparse.ArgumentParser(prog="wispgate", description="WISPGate Ledger: billing and rating for WISPs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if only is not None and module_info.name != only:
            continue
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def _command_module(argv: Sequence[str]) -> str | None:
    """The module of the command named in ``argv`` when it is one (each command is the module
    of its name), so that only that module is imported: importing every command's module costs
    each run of the CLI the web app, the Kafka client and the rest (~40 % of a `wispgate token
    create`); `wispgate --help` and a mistyped command still see them all."""
    name = next((arg for arg in argv if not arg.startswith("-")), None)
    if name is None or name.startswith("_"):
        return None
    names = {m.name for m in pkgutil.iter_modules(commands.__path__)}
    if name not in names:
        return None
    module = importlib.import_module(f"{commands.__name__}.{name}")
    return name if hasattr(module, "register") else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_module(argv)).parse_args(argv)
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
