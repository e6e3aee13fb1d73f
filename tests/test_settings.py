"""Settings come from a TOML file and WISPGATE_* variables (the environment wins); a wrong
name or value is refused with a message that names it, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import load_settings


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "wispgate.toml"
    config.write_text('[wispgate]\nstage_gather_ms = 20\nradius_port = 1813\n')
    settings = load_settings(str(config), environ={"WISPGATE_STAGE_GATHER_MS": "0"})
    assert settings.stage_gather_ms == 0 and settings.radius_port == 1813
    assert load_settings(environ={}).stage_gather_ms == 50  # the default


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WISPGATE_STAGE_GATHER_MS", "1001", "stage_gather_ms is from 0 to 1000"),
    ("WISPGATE_STAGE_GATHER_MS", "-1", "stage_gather_ms is from 0 to 1000"),
    ("WISPGATE_STAGE_GATHER_MS", "soon", "stage_gather_ms must be an integer"),
    ("WISPGATE_STAGE_NICE", "20", "stage_nice is from 0 to 19"),
    ("WISPGATE_RADIUS_COMMIT_DELAY_MS", "1001", "radius_commit_delay_ms is from 0 to 1000"),
    ("WISPGATE_RADIUS_COMMIT_DELAY_MS", "-5", "radius_commit_delay_ms is from 0 to 1000"),
    ("WISPGATE_PROJECTOR_PROCESS", "thread", "projector_process is 'separate' or 'inline'"),
])
def test_a_bad_value_is_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(environ={name: value})


def test_the_radius_commit_delay_reaches_the_accounting_server() -> None:
    from adapters.radius.registry import NasRegistry
    from adapters.radius.server import configured_server

    assert load_settings(environ={}).radius_commit_delay_ms == 5  # the default
    settings = load_settings(environ={"WISPGATE_RADIUS_COMMIT_DELAY_MS": "12", "WISPGATE_RADIUS_BATCH_MAX": "64"})
    server = configured_server(NasRegistry(), lambda records: [True] * len(records), settings)
    try:
        assert (server.commit_delay, server.batch_max) == (0.012, 64)
    finally:
        server.close()


def test_an_unknown_name_in_the_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "wispgate.toml"
    config.write_text('[wispgate]\nstage_gather = 20\n')
    with pytest.raises(ValueError, match="unknown setting 'stage_gather'"):
        load_settings(str(config), environ={})
