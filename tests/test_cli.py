"""The `wispgate` command line imports only the module of the command it runs."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from api import cli, commands

COMMANDS = sorted(m.name for m in pkgutil.iter_modules(commands.__path__)
                  if hasattr(__import__(f"api.commands.{m.name}", fromlist=["_"]), "register"))


def _help(parser_args: list[str], only: str | None) -> None:
    parser = cli.build_parser(only)
    with pytest.raises(SystemExit) as done:
        parser.parse_args(parser_args)
    assert done.value.code == 0


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_parses_alone_as_among_all(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Built alone, a command's parser has the same options and help as in the whole CLI."""
    _help([name, "--help"], None)
    among_all = capsys.readouterr().out
    assert cli._command_module([name, "--help"]) == name
    _help([name, "--help"], name)
    assert capsys.readouterr().out == among_all and among_all


def test_help_mistakes_and_helpers_see_every_command() -> None:
    assert cli._command_module(["--help"]) is None
    assert cli._command_module(["nosuch", "x"]) is None
    assert cli._command_module(["common"]) is None  # a module without a command
    assert len(COMMANDS) >= 15 and {"serve", "token", "billing", "relay"} <= set(COMMANDS)


def test_token_create_does_not_import_the_web_app_nor_pandas_nor_kafka(tmp_path: Path) -> None:
    """What a `wispgate token create` imports: none of the heavy modules other commands need
    (they made each run of the CLI ~3x slower)."""
    heavy = "('fastapi', 'pandas', 'kafka', 'uvicorn', 'reportlab')"
    code = ("import sys; from api import cli; "
            "assert cli.main(['token', 'create', '--role', 'admin', '--data-dir', sys.argv[1]]) == 0; "
            f"print('imported:', *(m for m in {heavy} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "var")], capture_output=True, text=True,
                          check=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                       if not k.startswith("WISPGATE_")})
    token, imported = done.stdout.strip().splitlines()[-2:]
    assert token.startswith("wg_")
    assert imported == "imported:"
