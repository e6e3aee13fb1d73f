"""The RADIUS accounting server: an asyncio DatagramProtocol with group commit.

Per datagram: find the NAS by source address, verify, normalise, queue. Queued records are
made durable in batches on a single writer thread (records arriving while one batch commits
form the next), and only then are the Accounting-Responses sent (guarantee 1). If the store
fails, nothing is answered: the NAS retransmits or fails over to its secondary server.

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
from typing import cast

from adapters import metrics
from domain.accounting import AccountingRecord

from .codec import (
    ACCOUNTING_REQUEST,
    STATUS_SERVER,
    DropReason,
    PacketDropped,
    decode_accounting,
    encode_accounting_response,
    encode_status_server_response,
    peek_header,
    verify_status_server,
)
from .registry import NasEntry, NasRegistry

log = logging.getLogger(__name__)

Sink = Callable[[list[AccountingRecord]], list[bool]]
Address = tuple[str, int]


@dataclass(slots=True)
class _Pending:
    record: AccountingRecord
    data: bytes
    addr: Address
    nas: NasEntry
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
        # cache key -> (expiry, response bytes or None while the record is in flight)
        self.responses: OrderedDict[tuple[str, int, int, bytes], tuple[float, bytes | None]] = OrderedDict()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radius-writer")
        self.accepting = True

    # ---- transport ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
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
        metrics.RADIUS_PACKETS.labels(str(code)).inc()
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
        record = decode_accounting(
            data, nas.secret, nas_id=nas.id, received_at=int(self.clock()),
            require_message_authenticator=nas.require_message_authenticator,
        )
        self.responses[cache_key] = (received + self.duplicate_window, None)
        self.pending.append(_Pending(record, data, addr, nas, cache_key, received))
        if not self.flushing:
            self._flush()

    def _send(self, response: bytes, addr: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(response, addr)

    # ---- group commit ------------------------------------------------------------------

    def _flush(self) -> None:
        batch, self.pending = self.pending[: self.batch_max], self.pending[self.batch_max :]
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
            for item, is_new in zip(batch, fresh, strict=True):
                if is_new:
                    metrics.RADIUS_DURABLE.inc()
                else:
                    metrics.RADIUS_CONTENT_DUPLICATES.inc()
                response = encode_accounting_response(item.data, item.nas.secret)
                self.responses[item.cache_key] = (item.received + self.duplicate_window, response)
                self._send(response, item.addr)
                metrics.RADIUS_RESPONSE_SECONDS.observe(now - item.received)
            if self.on_durable is not None:
                self.on_durable()
        self._expire(now)
        if self.pending:
            self._flush()

    def _expire(self, now: float) -> None:
        while self.responses:
            key, (expiry, response) = next(iter(self.responses.items()))
            if expiry > now or response is None:
                break
            self.responses.popitem(last=False)

    def close(self) -> None:
        self.accepting = False
        if self.transport is not None:
            self.transport.close()
        self.writer.shutdown(wait=True)


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
    return transport
