"""The benchmark's load generator behaves like a BNG: every record is acknowledged or counted
as failed, a lost request is retransmitted byte for byte, answers with a wrong authenticator
do not count."""

from __future__ import annotations

import asyncio
from collections import Counter

from adapters.radius.codec import encode_accounting_response
from bench.loadgen import LoadResult, run_load
from bench.workload import build_sessions

SECRET = "s3cret"


class Responder(asyncio.DatagramProtocol):
    """Answers accounting requests; ``drop_first`` ignores the first copy of each request,
    ``silent`` answers nothing, ``forge`` answers with a wrong secret first."""

    def __init__(self, *, drop_first: bool = False, silent: bool = False, forge: bool = False) -> None:
        self.drop_first, self.silent, self.forge = drop_first, silent, forge
        self.copies: Counter[bytes] = Counter()
        self.order: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.copies[data] += 1
        self.order.append(data)
        if self.silent or (self.drop_first and self.copies[data] == 1):
            return
        assert self.transport is not None
        if self.forge:
            self.transport.sendto(encode_accounting_response(data, b"not the secret"), addr)
        self.transport.sendto(encode_accounting_response(data, SECRET.encode()), addr)


def drive(responder: Responder, sessions: int = 40, **options: float) -> tuple[LoadResult, Responder]:
    async def main() -> LoadResult:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: responder, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            return await run_load("127.0.0.1", port, SECRET, build_sessions(sessions, 2, seed=7, tag="G"),
                                  inflight=8, **options)  # type: ignore[arg-type]
        finally:
            transport.close()

    return asyncio.run(main()), responder


def test_every_record_is_acknowledged_once_and_forged_answers_do_not_count() -> None:
    result, responder = drive(Responder(forge=True))
    assert result.acknowledged == result.sent == 40 * 4 and result.failed == 0 and result.retransmissions == 0
    assert result.stray == 40 * 4  # the forged answers did not count
    assert result.sessions_complete == set(range(40)) and len(result.latencies) == 160
    assert result.acked_by_status == {"Start": 40, "Interim-Update": 80, "Stop": 40}


def test_a_lost_request_is_retransmitted_byte_for_byte() -> None:
    result, responder = drive(Responder(drop_first=True), timeout=0.2)
    assert result.acknowledged == 160 and result.failed == 0
    assert result.retransmissions == 160 and set(responder.copies.values()) == {2}


def test_an_unanswered_request_fails_after_its_retries_and_the_load_goes_on() -> None:
    result, responder = drive(Responder(silent=True), sessions=4, timeout=0.1, retries=2)
    assert result.acknowledged == 0 and result.failed == 16 and result.sessions_complete == set()
    assert set(responder.copies.values()) == {3}  # the first copy and 2 retransmissions


def test_pacing_holds_the_rate() -> None:
    result, _ = drive(Responder(), sessions=20, rate=200.0)
    assert result.acknowledged == 80 and 0.3 < result.seconds < 1.5  # 80 requests at 200/s: ~0.4 s
