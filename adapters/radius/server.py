"""The RADIUS accounting server: an asyncio DatagramProtocol with group commit.

Per datagram: find the NAS by source address, verify, normalise, queue. Queued records are
made durable in batches on a single writer thread (records arriving while one batch commits
form the next), and only then are the Accounting-Responses sent (guarantee 1). If the store
fails, nothing is answered: the NAS retransmits or fails over to its secondary server.

Datagrams already waiting in the socket are read in the same wake-up (up to ``read_burst``)
before a batch is started, so a burst lands in one commit instead of a commit of the first
datagram alone followed by one of the rest.

Under a steady, moderate load (records trickling in one per wake-up, as from many BNGs) a
commit would start for every one or two records, and a commit's fixed cost (the transaction,
the WAL's fsync, the hand-off to the writer thread and back) is paid per record: at 2,000
records/s the child spent 2.6x the CPU per record it spends under a saturating load. So a
batch waits up to ``commit_delay`` from its oldest record's arrival for others to join it
(PostgreSQL's commit_delay, for the same reason). Only while the load is light: when the
previous batch or the one pending has ``commit_min`` records or more, a commit starts as soon
as the writer is free, as without the delay (a saturating load keeps the writer busy with
the records that piled up during the previous commit, and waiting would idle it). A record
waits at most ``commit_delay`` more than it would have otherwise.

Retransmissions (same source, Identifier and Request Authenticator) inside the duplicate
window are answered from a cache, or joined to the batch already in flight; records re-sent
with a new Identifier are recognised by their content key in the log (guarantee 2).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from adapters import metrics
from domain.accounting import AccountingRecord

from .codec import (
    ACCOUNTING_REQUEST,
    STATUS_SERVER,
    DropReason,
    PacketDropped,
    decode_accounting_with_response,
    encode_status_server_response,
    peek_header,
    verify_status_server,
)
from .registry import NasRegistry

log = logging.getLogger(__name__)

Sink = Callable[[list[AccountingRecord]], list[bool]]
Address = tuple[str, int]

_MAX_DATAGRAM = 4096  # RFC 2865 section 3: a RADIUS packet is at most 4096 octets


@dataclass(slots=True)
class _Pending:
    record: AccountingRecord
    response: bytes  # the Accounting-Response, sent once the record is durable
    addr: Address
    cache_key: tuple[str, int, int, bytes]
    received: float


class AccountingServer(asyncio.DatagramProtocol):
    def __init__(
        self,
        registry: NasRegistry,
        sink: Sink,
        *,
        batch_max: int = 512,
        duplicate_window: float = 30.0,
        clock: Callable[[], float] = time.time,
        on_durable: Callable[[], None] | None = None,
        read_burst: int = 256,
        commit_delay: float = 0.0,
        commit_min: int = 16,
    ) -> None:
        self.registry = registry
        self.sink = sink
        self.batch_max = batch_max
        self.duplicate_window = duplicate_window
        self.clock = clock
        self.on_durable = on_durable
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[_Pending] = []
        self.flushing = False
        self.commit_delay = commit_delay
        self.commit_min = min(commit_min, batch_max)
        self._last_batch = 0  # records in the batch last started
        self._due: asyncio.TimerHandle | None = None  # the delayed start of the next commit
        # cache key -> (expiry, response bytes or None while the record is in flight)
        self.responses: OrderedDict[tuple[str, int, int, bytes], tuple[float, bytes | None]] = OrderedDict()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radius-writer")
        self._accepting = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self.read_burst = read_burst
        self.sock: socket.socket | None = None  # set by start_accounting_server: read in bursts
        self._packets_by_code: dict[int, Any] = {}  # labelled counters, looked up once per code
        self._burst_codes: dict[int, int] = {}  # packets per code in this wake-up, counted at its end

    # ---- transport ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._loop = asyncio.get_running_loop()

    @property
    def accepting(self) -> bool:
        return self._accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        """Fenced or shutting down: new datagrams go unanswered. Records received before are
        committed and answered without waiting for the commit delay (may be set from another
        thread: the site controller's)."""
        self._accepting = bool(value)
        if not value and self._due is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._commit_when_due)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._receive(data, addr)
        sock = self.sock
        if sock is not None:
            # Take what else is already queued in the socket now, rather than one datagram
            # per turn of the event loop: fewer wake-ups, and a burst becomes one batch.
            for _ in range(self.read_burst):
                try:
                    data, addr = sock.recvfrom(_MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # e.g. an ICMP error queued on the socket: the transport reports it
                    break
                self._receive(data, addr)
        self._count_packets()
        self._commit_when_due()

    def _count_packets(self) -> None:
        """Add the wake-up's packets to the labelled counters: one locked increment per code
        instead of one per packet."""
        for code, count in self._burst_codes.items():
            counter = self._packets_by_code.get(code)
            if counter is None:
                counter = self._packets_by_code[code] = metrics.RADIUS_PACKETS.labels(str(code))
            counter.inc(count)
        self._burst_codes.clear()

    def _receive(self, data: bytes, addr: Address) -> None:
        received = time.monotonic()
        try:
            self._handle(data, addr, received)
        except PacketDropped as dropped:
            metrics.RADIUS_DROPPED.labels(dropped.reason.value).inc()
            log.debug("dropped packet from %s: %s", addr, dropped)
        except Exception:  # never let one packet take the server down
            metrics.RADIUS_DROPPED.labels("internal-error").inc()
            log.exception("unexpected error handling a packet from %s", addr)

    def _handle(self, data: bytes, addr: Address, received: float) -> None:
        nas = self.registry.lookup(addr[0])
        if nas is None and self.registry.refresh():
            nas = self.registry.lookup(addr[0])
        if nas is None:
            raise PacketDropped(DropReason.UNKNOWN_NAS, f"no NAS registered for {addr[0]}")
        code, identifier, authenticator = peek_header(data)
        self._burst_codes[code] = self._burst_codes.get(code, 0) + 1
        if code == STATUS_SERVER:
            verify_status_server(data, nas.secret)
            self._send(encode_status_server_response(data, nas.secret), addr)
            return
        if code != ACCOUNTING_REQUEST:
            raise PacketDropped(DropReason.UNSUPPORTED_CODE, f"code {code} is not accounting")
        cache_key = (addr[0], addr[1], identifier, authenticator)
        cached = self.responses.get(cache_key)
        if cached is not None and cached[0] > received:
            metrics.RADIUS_DUPLICATES.inc()
            if cached[1] is not None:
                self._send(cached[1], addr)
            return  # still in flight: the response goes out when the batch commits
        if not self.accepting:  # fenced or shutting down: silence makes the NAS fail over
            metrics.RADIUS_DROPPED.labels("not-accepting").inc()
            return
        record, response = decode_accounting_with_response(
            data, nas.secret, nas_id=nas.id, received_at=int(self.clock()),
            require_message_authenticator=nas.require_message_authenticator,
        )
        self.responses[cache_key] = (received + self.duplicate_window, None)
        self.pending.append(_Pending(record, response, addr, cache_key, received))

    def _send(self, response: bytes, addr: Address) -> None:
        """Send on the socket directly when the transport has nothing queued (what its sendto
        would do, with fewer checks); otherwise, or when the socket refuses, through the
        transport, which queues the datagram or reports the error."""
        transport = self.transport
        if transport is None:
            return
        sock = self.sock
        queued = getattr(transport, "get_write_buffer_size", None)  # selector transports have it
        if sock is not None and queued is not None and not queued():
            try:
                sock.sendto(response, addr)
                return
            except OSError:
                pass
        transport.sendto(response, addr)

    # ---- group commit ------------------------------------------------------------------

    def _commit_when_due(self) -> None:
        """Start a commit of what is pending now, or once its oldest record has waited
        ``commit_delay``, unless one is running (its end starts the next)."""
        if not self.pending or self.flushing:
            return
        wait = self.pending[0].received + self.commit_delay - time.monotonic()
        if (wait <= 0 or len(self.pending) >= self.commit_min or self._last_batch >= self.commit_min
                or not self._accepting):
            self._flush()
        elif self._due is None:
            self._due = asyncio.get_running_loop().call_later(wait, self._delay_over)

    def _delay_over(self) -> None:
        self._due = None
        if self.pending and not self.flushing:
            self._flush()

    def _flush(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        batch, self.pending = self.pending[: self.batch_max], self.pending[self.batch_max :]
        self._last_batch = len(batch)
        self.flushing = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.writer, self.sink, [item.record for item in batch])
        future.add_done_callback(lambda done: self._flushed(batch, done))

    def _flushed(self, batch: list[_Pending], done: asyncio.Future[list[bool]]) -> None:
        self.flushing = False
        error = done.exception()
        now = time.monotonic()
        if error is not None:
            metrics.RADIUS_STORE_FAILURES.inc()
            log.error("could not make %d records durable, not answering: %s", len(batch), error)
            for item in batch:
                self.responses.pop(item.cache_key, None)  # let the retransmission try again
        else:
            fresh = done.result()
            metrics.RADIUS_BATCH_SIZE.observe(len(batch))
            stored = sum(fresh)
            metrics.RADIUS_DURABLE.inc(stored)
            if stored < len(batch):
                metrics.RADIUS_CONTENT_DUPLICATES.inc(len(batch) - stored)
            latency = metrics.RADIUS_RESPONSE_SECONDS.observe
            window = self.duplicate_window
            for item in batch:
                self.responses[item.cache_key] = (item.received + window, item.response)
                self._send(item.response, item.addr)
                latency(now - item.received)
            if self.on_durable is not None:
                self.on_durable()
        self._expire(now)
        self._commit_when_due()

    def _expire(self, now: float) -> None:
        while self.responses:
            key, (expiry, response) = next(iter(self.responses.items()))
            if expiry > now or response is None:
                break
            self.responses.popitem(last=False)

    def close(self) -> None:
        self._accepting = False
        if self._due is not None:  # what is pending stays unanswered: the NAS retransmits
            self._due.cancel()
            self._due = None
        if self.transport is not None:
            self.transport.close()
        self.writer.shutdown(wait=True)


def configured_server(registry: NasRegistry, sink: Sink, settings: Any) -> AccountingServer:
    """The accounting server as the settings configure it (`serve`, its RADIUS child and the
    distributed `radius` role)."""
    return AccountingServer(registry, sink, batch_max=settings.radius_batch_max,
                            duplicate_window=settings.duplicate_cache_seconds,
                            commit_delay=settings.radius_commit_delay_ms / 1000)


async def start_accounting_server(
    host: str, port: int, server: AccountingServer, *, receive_buffer: int = 8 * 1024 * 1024
) -> asyncio.DatagramTransport:
    """Bind the UDP port with a large receive buffer (bursts after a BNG reboot)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    except OSError:
        log.warning("could not raise SO_RCVBUF to %d", receive_buffer)
    sock.bind((host, port))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, sock=sock)
    server.sock = sock
    return transport
