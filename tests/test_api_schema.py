"""schemathesis against our own OpenAPI, in-process (ASGI), with an admin token: no request
the schema allows (or almost allows) may produce a 5xx, and every documented response body
must match its schema. Hypothesis is seeded by schemathesis per operation; the example count
is kept small so the suite stays fast."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.app import create_app
from api.bootstrap import Runtime
from api.settings import Settings


@pytest.fixture
def sqlite_runtime(tmp_path: Any) -> Iterator[Runtime]:
    from api.bootstrap import build_runtime

    runtime = build_runtime(Settings(data_dir=tmp_path / "var"))
    runtime.start_stages()
    yield runtime
    runtime.close()


@pytest.fixture
def admin_token(sqlite_runtime: Runtime) -> str:
    token = "wg_" + secrets.token_urlsafe(16)
    sqlite_runtime.ledger.issue_token(token=token, role="admin", account_id=None, label="fuzz", issued_at=0)
    return token


def test_no_server_errors_nor_schema_violations(sqlite_runtime: Runtime, admin_token: str) -> None:
    # schemathesis' pytest plugin (from_fixture) does not work with pytest 9; drive it directly.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(sqlite_runtime))
    headers = {"Authorization": f"Bearer {admin_token}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def exercise(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

        try:
            exercise()
        except Exception as error:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {str(error)[:1500]}")
    assert operations > 30
    assert not failures, "\n\n".join(failures)
