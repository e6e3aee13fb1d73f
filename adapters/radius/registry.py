"""The NAS registry as the RADIUS adapter sees it: source address (or subnet) -> secret.

Loaded from the read model and refreshed periodically, and early (rate-limited) when a
packet arrives from an unknown source, so a NAS registered through the API is accepted
within a second without a restart."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select

from projections import tables

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NasEntry:
    id: str
    name: str
    address: str
    secret: bytes
    vendor: str
    require_message_authenticator: bool


class NasRegistry:
    def __init__(self, engine: Engine | None = None, *, min_refresh_interval: float = 1.0) -> None:
        self.engine = engine
        self.min_refresh_interval = min_refresh_interval
        self._exact: dict[str, NasEntry] = {}
        self._networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, NasEntry]] = []
        self._last_refresh = 0.0
        self._stale = True
        self._lock = threading.Lock()

    def mark_stale(self, *_: object) -> None:
        """The NAS table may have changed (called by the projector in the same process)."""
        self._stale = True

    def lookup(self, ip: str) -> NasEntry | None:
        entry = self._exact.get(ip)
        if entry is not None or not self._networks:
            return entry
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for network, candidate in self._networks:
            if address in network:
                return candidate
        return None

    def load(self, entries: list[NasEntry]) -> None:
        exact: dict[str, NasEntry] = {}
        networks = []
        for entry in entries:
            network = ipaddress.ip_network(entry.address, strict=False)
            if network.num_addresses == 1:
                exact[str(network.network_address)] = entry
            else:
                networks.append((network, entry))
        # Most specific subnet first.
        networks.sort(key=lambda item: item[0].prefixlen, reverse=True)
        self._exact, self._networks = exact, networks

    def refresh(self, *, force: bool = False) -> bool:
        """Reload from the read model; returns False when rate-limited."""
        if self.engine is None:
            return False
        with self._lock:
            now = time.monotonic()
            if not force and not self._stale and now - self._last_refresh < self.min_refresh_interval:
                return False
            self._last_refresh, self._stale = now, False
        with self.engine.connect() as conn:
            rows = conn.execute(select(tables.nas).where(tables.nas.c.retired.is_(False))).mappings().all()
        self.load([
            NasEntry(id=r["id"], name=r["name"], address=r["address"], secret=r["secret"].encode(),
                     vendor=r["vendor"], require_message_authenticator=r["require_message_authenticator"])
            for r in rows
        ])
        return True


async def keep_fresh(registry: NasRegistry, interval: float = 2.0) -> None:
    """Re-read the NAS table every ``interval`` seconds until cancelled (a NAS added or
    changed through the API is known within that time); a failed read is logged and retried."""
    import asyncio

    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(registry.refresh, force=True)
        except Exception:
            log.exception("could not refresh the NAS registry")
