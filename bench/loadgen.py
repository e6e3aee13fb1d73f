"""An asyncio RADIUS accounting load generator that behaves like a BNG.

A fixed number of requests is in flight (one per worker); each worker owns a share of the
sessions and sends them round by round (all Starts, then the first Interims, ...), so every
session has at most one request outstanding and its packets arrive in order. A request that
times out is retransmitted byte for byte (same Identifier and Request Authenticator), as a
NAS does. Responses are checked (code, Identifier, Response Authenticator) before a record
counts as acknowledged. Packets are encoded with the product's codec before the clock starts,
so the generator spends its time on the wire, not on encoding.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.radius.codec import ACCOUNTING_RESPONSE, encode_accounting_request

from .workload import Packet, Session

# Each worker cycles through a few Identifiers of its socket, as a NAS increments them: a
# server that still holds the previous request (cleanup delay) sees a new Identifier.
WORKERS_PER_SOCKET = 64
IDS_PER_WORKER = 256 // WORKERS_PER_SOCKET


@dataclass
class LoadResult:
    """What the generator saw; ``last_acked`` is what verification expects in the system."""

    sent: int = 0
    acknowledged: int = 0
    retransmissions: int = 0
    failed: int = 0  # no valid response after every retransmission
    stray: int = 0  # responses that match no outstanding request (late, after a retransmit)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    last_acked: dict[int, Packet] = field(default_factory=dict)  # session index -> last acked packet
    acked_by_status: dict[str, int] = field(default_factory=dict)
    sessions_complete: set[int] = field(default_factory=set)  # every packet acknowledged

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency quantile in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def acked_bytes(self) -> tuple[int, int]:
        """(upload, download) totals of the last acknowledged counters of every session."""
        return (sum(p.upload for p in self.last_acked.values()),
                sum(p.download for p in self.last_acked.values()))


class _Responses(asyncio.DatagramProtocol):
    """Matches Accounting-Responses to outstanding requests by Identifier and authenticator,
    and hands each valid one to the engine at once (no coroutine or timer per request: the
    generator must not be what limits the figures)."""

    def __init__(self, secret: bytes, result: LoadResult, on_response: Callable[[_Slot, float], None]) -> None:
        self.secret = secret
        self.result = result
        self.on_response = on_response
        self.waiting: dict[int, _Slot] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if len(data) < 20 or data[0] != ACCOUNTING_RESPONSE:
            self.result.stray += 1
            return
        slot = self.waiting.get(data[1])
        length = int.from_bytes(data[2:4], "big")
        if slot is None or hashlib.md5(
                data[:4] + slot.authenticator + data[20:length] + self.secret).digest() != data[4:20]:
            self.result.stray += 1
            return
        del self.waiting[data[1]]
        self.on_response(slot, time.monotonic())


class _Slot:
    """One of the ``inflight`` workers: its packets in order, the one outstanding, its tries."""

    __slots__ = ("endpoint", "plan", "index", "attempt", "first_sent", "sent_at", "authenticator")

    def __init__(self, endpoint: _Responses, plan: list[tuple[Packet, bytes]]) -> None:
        self.endpoint = endpoint
        self.plan = plan
        self.index = 0
        self.attempt = 0
        self.first_sent = 0.0
        self.sent_at = 0.0
        self.authenticator = b""


async def run_load(
    host: str, port: int, secret: str, sessions: list[Session], *,
    inflight: int = 64, timeout: float = 2.0, retries: int = 5, rate: float | None = None,
    on_ack: Callable[[Packet, float], None] | None = None,
) -> LoadResult:
    """Send every packet of ``sessions`` and wait for each Accounting-Response.

    ``rate`` (requests/s) paces the load instead of sending as fast as answers come back;
    ``on_ack`` is called with each acknowledged packet and the monotonic time of its ack.

    Callback-driven: a valid response sends the worker's next packet from the datagram
    callback; one sweeper retransmits what has waited ``timeout`` (byte for byte) and gives
    up after ``retries``. Against a responder that does nothing but answer, this generator
    sustains several times the rates it measures here (see the README, "Performance")."""
    key = secret.encode()
    result = LoadResult()
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    failed_sessions: set[int] = set()
    active: set[_Slot] = set()  # slots with a request outstanding
    idle_workers = 0
    ticket = 0

    def send(slot: _Slot, now: float) -> None:
        packet, data = slot.plan[slot.index]
        slot.authenticator = data[4:20]
        slot.sent_at = now
        if slot.attempt == 0:
            slot.first_sent = now
        else:
            result.retransmissions += 1
        slot.endpoint.waiting[data[1]] = slot
        assert slot.endpoint.transport is not None
        slot.endpoint.transport.sendto(data)
        result.sent += 1
        active.add(slot)

    def next_packet(slot: _Slot) -> None:
        """Send the slot's next packet (now, or when the pacing says), or retire the slot."""
        nonlocal idle_workers, ticket
        slot.index += 1
        slot.attempt = 0
        if slot.index >= len(slot.plan):
            idle_workers += 1
            if idle_workers == len(slots) and not finished.done():
                finished.set_result(None)
            return
        if rate:
            due = started + ticket / rate
            ticket += 1
            if due > time.monotonic():
                loop.call_at(due, lambda: send(slot, time.monotonic()))
                return
        send(slot, time.monotonic())

    def acknowledged(slot: _Slot, acked_at: float) -> None:
        active.discard(slot)
        packet = slot.plan[slot.index][0]
        result.acknowledged += 1
        result.latencies.append(acked_at - slot.first_sent)
        result.last_acked[packet.session] = packet
        result.acked_by_status[packet.status] = result.acked_by_status.get(packet.status, 0) + 1
        if on_ack is not None:
            on_ack(packet, acked_at)
        next_packet(slot)

    def sweep() -> None:
        now = time.monotonic()
        for slot in [s for s in active if now - s.sent_at >= timeout]:
            active.discard(slot)
            packet, data = slot.plan[slot.index]
            if slot.attempt < retries:
                slot.attempt += 1
                send(slot, now)
                continue
            slot.endpoint.waiting.pop(data[1], None)
            result.failed += 1
            failed_sessions.add(packet.session)
            next_packet(slot)

    sockets = (inflight + WORKERS_PER_SOCKET - 1) // WORKERS_PER_SOCKET
    endpoints: list[_Responses] = []
    for _ in range(sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.connect((host, port))
        _, protocol = await loop.create_datagram_endpoint(lambda: _Responses(key, result, acknowledged), sock=sock)
        endpoints.append(protocol)

    # Encode everything before the clock starts: worker w owns sessions w, w+inflight, ...
    slots: list[_Slot] = []
    for worker in range(inflight):
        first_id = worker % WORKERS_PER_SOCKET * IDS_PER_WORKER
        mine = sessions[worker::inflight]
        rounds = max((len(s.packets) for s in mine), default=0)
        order = [s.packets[r] for r in range(rounds) for s in mine if r < len(s.packets)]
        slots.append(_Slot(endpoints[worker // WORKERS_PER_SOCKET],
                           [(packet, encode_accounting_request(first_id + n % IDS_PER_WORKER, key, packet.attributes))
                            for n, packet in enumerate(order)]))
    started = time.monotonic()
    for slot in slots:
        slot.index = -1
        next_packet(slot)
    if idle_workers == len(slots) and not finished.done():
        finished.set_result(None)
    try:
        while not finished.done():
            await asyncio.wait([finished], timeout=min(0.1, timeout / 4))
            sweep()
    finally:
        result.seconds = time.monotonic() - started
        for endpoint in endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
    result.sessions_complete = {s.index for s in sessions} - failed_sessions
    return result
