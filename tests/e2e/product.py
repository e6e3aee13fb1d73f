"""A running `wispgate serve` process for end-to-end tests: real UDP, real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

WISPGATE = str(Path(sys.executable).with_name("wispgate"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiCalls:
    """One-call HTTP helpers over ``client()`` (a new connection per call), shared by the
    test handles of running sites."""

    def client(self, token: str | None = None) -> httpx.Client:
        raise NotImplementedError

    def post(self, path: str, body: dict[str, Any], token: str | None = None, **kw: Any) -> httpx.Response:
        with self.client(token) as client:
            return client.post(path, json=body, **kw)

    def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        with self.client(token) as client:
            return client.get(path, **kw)


@dataclass
class Product(ApiCalls):
    data_dir: Path
    radius_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    api_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {
            "WISPGATE_DATA_DIR": str(self.data_dir),
            "WISPGATE_RADIUS_PORT": str(self.radius_port),
            "WISPGATE_API_PORT": str(self.api_port),
            "WISPGATE_LOG_LEVEL": "warning",
        } | self.extra_env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        log = open(self.data_dir.parent / f"serve-{self.api_port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([WISPGATE, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        # Start-up is a second on an idle machine; a loaded CI machine has taken over 30 s.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"wispgate serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        # Not left running behind the failed test (its children hold ports and CPU).
        self.stop()
        raise RuntimeError("wispgate serve did not become healthy in 90 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WISPGATE, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def create_token(self, role: str = "admin", account: str | None = None) -> str:
        args = ["token", "create", "--role", role] + (["--account", account] if account else [])
        done = self.cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if (token or self.token) else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)



def radclient(
    port: int, secret: str, records: list[dict[str, Any]], *, retries: int = 3,
) -> subprocess.CompletedProcess[str]:
    """Send accounting records with FreeRADIUS's radclient, the BNG-side reference tool."""
    binary = shutil.which("radclient")
    if binary is None:
        raise RuntimeError("radclient is missing: `make test` installs freeradius-utils")
    lines = []
    for attributes in records:
        for name, value in attributes.items():
            lines.append(f'{name} = "{value}"' if isinstance(value, str) else f"{name} = {value}")
        lines.append("")
    return subprocess.run(
        [binary, "-q", "-r", str(retries), "-t", "2", "-x", f"127.0.0.1:{port}", "acct", secret],
        input="\n".join(lines), capture_output=True, text=True, timeout=60, check=False,
    )


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_running(parent: int, module: str) -> list[int]:
    """Pids of live processes whose parent is ``parent`` and that run ``python -m <module>``
    (serve's children: adapters.radius.worker, adapters.projector_worker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and module.encode() in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found
