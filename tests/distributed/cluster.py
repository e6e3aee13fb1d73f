"""The distributed roles as real processes (`wispgate radius|rater|relay|projector|api`), the
way compose.yaml runs them, on a fresh PostgreSQL database and topics of their own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import create_engine, text

from adapters.persistence import eventstore_env
from ledger import Ledger
from tests.e2e.product import WISPGATE, free_port

ROLES = ("radius", "rater", "relay", "projector", "api")


@dataclass
class Cluster:
    database_url: str
    bootstrap: str
    prefix: str
    log_dir: Path
    partitions: int = 4
    radius_port: int = field(default_factory=lambda: free_port(2))  # SOCK_DGRAM
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str = ""
    nas_id: str = ""
    plan_id: str = ""
    # More WISPGATE_* settings for every role (e.g. a site of a two-site pair, tests/sites).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return os.environ | self.extra_env | {
            "WISPGATE_DATABASE_URL": self.database_url,
            "WISPGATE_KAFKA_BOOTSTRAP": self.bootstrap,
            "WISPGATE_KAFKA_TOPIC_PREFIX": self.prefix,
            "WISPGATE_KAFKA_PARTITIONS": str(self.partitions),
            "WISPGATE_RADIUS_PORT": str(self.radius_port),
            "WISPGATE_API_PORT": str(self.api_port),
            "WISPGATE_LOG_LEVEL": "info",
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # ---- processes -----------------------------------------------------------------------

    def start(self, role: str, name: str | None = None) -> None:
        name = name or role
        assert name not in self.processes or self.processes[name].poll() is not None, f"{name} runs"
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.processes[name] = subprocess.Popen([WISPGATE, role], env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT)
        if role == "api":
            self.wait_healthy()

    def start_all(self) -> None:
        for role in ROLES:
            self.start(role)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown code runs."""
        process = self.processes.pop(name)
        assert process.poll() is None, f"{name} had exited by itself ({process.returncode}); see {self.log_dir}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for name in list(self.processes):
            self.stop(name)

    def assert_running(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"roles exited: {dead} (logs in {self.log_dir})"

    def wait_for_log(self, name: str, pattern: str, timeout: float = 60.0) -> None:
        """Block until the role's log has a line matching the regular expression ``pattern``."""
        deadline = time.monotonic() + timeout
        path = self.log_dir / f"{name}.log"
        while not re.search(pattern, path.read_text() if path.exists() else ""):
            self.assert_running()
            assert time.monotonic() < deadline, f"{name} never logged {pattern!r}"
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_running()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("wispgate api did not become healthy")

    # ---- provisioning through the API ----------------------------------------------------

    def create_token(self) -> str:
        done = subprocess.run([WISPGATE, "token", "create", "--role", "admin"], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        self.token = done.stdout.strip().splitlines()[-1]
        # The API knows the token once the projector has projected it.
        deadline = time.monotonic() + 30
        while self.get("/v1/nas").status_code == 401:
            assert time.monotonic() < deadline, "token never became usable"
            time.sleep(0.1)
        return self.token

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=15)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        with self.client() as client:
            return client.post(path, json=body)

    def get(self, path: str) -> httpx.Response:
        with self.client() as client:
            return client.get(path)

    def provision_site(self, secret: str, price_per_gb: str) -> None:
        """Through the API: an admin token, a NAS at 127.0.0.1 and a metered plan."""
        self.create_token()
        created = self.post("/v1/nas", {"name": "bng", "address": "127.0.0.1", "secret": secret})
        assert created.status_code == 201, created.text
        self.nas_id = created.json()["id"]
        plan = self.post("/v1/plans", {"name": "Metered", "currency": "USD", "monthly_fee": "0.00",
                                       "price_per_gb": price_per_gb})
        assert plan.status_code == 201, plan.text
        self.plan_id = plan.json()["id"]

    def open_accounts(self, usernames: list[str]) -> dict[str, str]:
        """An account per username (username -> id): the first through the API, the rest
        straight into the ledger with the command the API calls (an HTTP round trip each,
        with read-your-writes through Kafka, would dominate the test's time)."""
        first = self.post("/v1/accounts", {"name": usernames[0], "plan_id": self.plan_id,
                                           "usernames": usernames[:1], "opened_at": "2023-01-01T00:00:00Z"})
        assert first.status_code == 201, first.text
        accounts = {usernames[0]: first.json()["id"]}
        ledger = Ledger(env=eventstore_env("ledger", data_dir=self.log_dir, database_url=self.database_url))
        try:
            for username in usernames[1:]:
                account = ledger.open_account(name=username, plan_id=UUID(self.plan_id), usernames=[username],
                                              opened_at=0)
                accounts[username] = str(account.id)
        finally:
            ledger.close()
        return accounts

    # ---- progress ------------------------------------------------------------------------

    def settled(self) -> bool:
        """Every record in the accounting topic rated, every ledger event projected."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            tps = [TopicPartition(f"{self.prefix}.accounting", p) for p in range(self.partitions)]
            ends = consumer.end_offsets(tps)
        finally:
            consumer.close()
        engine = create_engine("postgresql+psycopg://" + self.database_url.split("://", 1)[1])
        try:
            with engine.connect() as conn:
                tracked = dict(conn.execute(text(
                    "select application_name, notification_id from ledger_tracking")).all())
                last_event = conn.execute(text("select max(notification_id) from ledger_events")).scalar() or 0
                projected = conn.execute(text(
                    "select position from projection_positions where name = 'readmodels'")).scalar() or 0
        finally:
            engine.dispose()
        rated = all(tracked.get(f"{tp.topic}:{tp.partition}", 0) == end for tp, end in ends.items())
        return rated and projected == last_event

    def wait_settled(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.settled():
            self.assert_running()
            assert time.monotonic() < deadline, f"not settled after {timeout} s (logs in {self.log_dir})"
            time.sleep(0.3)
