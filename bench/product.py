"""Running the product as an operator does: `wispgate ...` subprocesses on spare ports, the
HTTP API, and the provisioning every target needs (NAS, plan, one account per subscriber)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx

from .workload import NAS_IP, username

WISPGATE = str(Path(sys.executable).with_name("wispgate"))
PRICE_PER_GB = Decimal("0.45")
BYTES_PER_GB = Decimal(10**9)
# Before the workload's fixed clock (bench.workload.BASE_TIME): usage before an account's
# opening is not charged to it.
OPENED_AT = "2026-01-01T00:00:00Z"


def charge(total_bytes: int) -> Decimal:
    """What the bench plan charges for ``total_bytes`` (exact, as the rater computes it)."""
    return Decimal(total_bytes) * PRICE_PER_GB / BYTES_PER_GB


@dataclass
class Process:
    """One `wispgate <command>` subprocess with its own environment and log file."""

    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen([WISPGATE, *self.args], env=os.environ | self.env,
                                          stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen is None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.popen = None


def wait_healthy(url: str, process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.args[0]} exited; see {process.log}:\n"
                               + process.log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}/health not ready in {timeout} s; see {process.log}")


def create_token(env: dict[str, str]) -> str:
    done = subprocess.run([WISPGATE, "token", "create", "--role", "admin", "--label", "bench"],
                          env=os.environ | env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wispgate token create failed: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Provisioned:
    """What provisioning created; saved next to the template as JSON."""

    token: str
    plan_id: str
    accounts: dict[str, str] = field(default_factory=dict)  # username -> account id

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"token": self.token, "plan_id": self.plan_id, "accounts": self.accounts}))

    @classmethod
    def load(cls, path: Path) -> Provisioned:
        data = json.loads(path.read_text())
        return cls(data["token"], data["plan_id"], data["accounts"])


async def provision(url: str, token: str, secret: str, subscribers: int, *, concurrency: int = 8) -> Provisioned:
    """NAS 127.0.0.1, one plan (0.45 per GB), one account per subscriber, through the API."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        nas = await client.post("/v1/nas", json={"name": "bench-bng", "address": NAS_IP, "secret": secret,
                                                 "vendor": "generic"})
        nas.raise_for_status()
        plan = await client.post("/v1/plans", json={"name": "Bench 25", "currency": "USD", "monthly_fee": "25.00",
                                                    "price_per_gb": str(PRICE_PER_GB)})
        plan.raise_for_status()
        done = Provisioned(token, plan.json()["id"])
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(subscribers):
            queue.put_nowait(index)

        async def opener() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                user = username(index)
                created = await client.post("/v1/accounts", json={"name": user, "plan_id": done.plan_id,
                                                                  "usernames": [user], "opened_at": OPENED_AT})
                created.raise_for_status()
                done.accounts[user] = created.json()["id"]

        await asyncio.gather(*(opener() for _ in range(concurrency)))
    return done


def health(url: str) -> dict[str, int]:
    checks = httpx.get(f"{url}/health", timeout=10).json()["checks"]
    return {k: int(v) for k, v in checks.items() if isinstance(v, int)}


def wait_drained(url: str, timeout: float = 600.0) -> float:
    """Wait until everything accepted is rated and projected; returns when that happened
    (monotonic). The ledger position is read after the rated position caught up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checks = health(url)
        if (checks["rated_position"] >= checks["accounting_position"]
                and checks["projected_position"] >= checks["ledger_position"]):
            again = health(url)  # the rater may have committed between the two reads above
            if again == checks:
                return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not rate and project everything within {timeout} s")
