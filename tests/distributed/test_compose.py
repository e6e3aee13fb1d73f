"""compose.yaml is valid for Compose and describes what the distributed tests run: the same
roles, settings the product knows, healthchecks, and start order by health."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from api.settings import Settings

from .cluster import ROLES

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def compose_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: tests/services/ensure.sh installs it (Debian docker-compose)"
    return subprocess.run([binary, "-f", str(COMPOSE), *args, "config"], env=os.environ | env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_is_valid_and_requires_the_database_password() -> None:
    one_site = compose_config(env={"POSTGRES_PASSWORD": "secret"})
    assert one_site.returncode == 0, one_site.stderr
    two_sites = compose_config("--profile", "two-sites", env={"POSTGRES_PASSWORD": "secret",
                                                              "WISPGATE_REPLICATION_TOKEN": "token"})
    assert two_sites.returncode == 0, two_sites.stderr
    missing = compose_config(env={"POSTGRES_PASSWORD": ""})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def test_compose_runs_the_roles_the_tests_run_with_known_settings() -> None:
    config: dict[str, Any] = yaml.safe_load(
        compose_config(env={"POSTGRES_PASSWORD": "secret"}).stdout)
    services = config["services"]
    known = {f"WISPGATE_{f.name.upper()}" for f in fields(Settings)}
    for role in ROLES:
        service = services[role]
        assert service["command"] == [role]
        assert service["healthcheck"]["test"], role
        assert {name: d["condition"] for name, d in service["depends_on"].items()} == {
            "postgres": "service_healthy", "kafka": "service_healthy"}
        unknown = {k for k in service["environment"] if k.startswith("WISPGATE_")} - known
        assert not unknown, f"{role}: settings the product does not know: {unknown}"
        assert service["environment"]["WISPGATE_DATABASE_URL"].startswith("postgresql://")
    assert {"postgres", "kafka"} <= set(services)
