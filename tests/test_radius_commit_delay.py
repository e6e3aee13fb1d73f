"""The RADIUS server's commit delay: under a light load a batch waits (at most
``commit_delay`` from its oldest record) for more records, so a trickle of records is
committed in few batches; a batch of ``commit_min`` or more, or one following such a batch
(a saturating load), starts as soon as the writer is free. Guarantee 1 holds throughout:
every answer comes after its record's commit."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from adapters.radius.codec import encode_accounting_request
from adapters.radius.server import AccountingServer, start_accounting_server
from domain.accounting import AccountingRecord
from tests.test_radius_server import SECRET, local_nas, receive_answers, send_starts

# Long enough that a test which waited for it would fail on its answers' 5 s timeout.
FOREVER = 60.0


class RecordingStore:
    """Records each committed batch; ``durable`` holds every record committed so far."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.durable: set[str] = set()

    def append(self, records: list[AccountingRecord]) -> list[bool]:
        self.batches.append([r.acct_session_id for r in records])
        self.durable.update(r.acct_session_id for r in records)
        return [True] * len(records)


@dataclass
class Bench:
    store: RecordingStore
    server: AccountingServer
    port: int
    client: socket.socket

    def send(self, identifier: int, session: str) -> None:
        self.client.sendto(encode_accounting_request(identifier, SECRET, {
            "Acct-Status-Type": "Start", "Acct-Session-Id": session, "User-Name": "alice"}),
            ("127.0.0.1", self.port))

    async def answer(self) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.client, 4096), timeout=10)


@asynccontextmanager
async def running(delay: float, commit_min: int = 16) -> AsyncIterator[Bench]:
    """A server with the delay on a recording store, and a client socket to it."""
    store = RecordingStore()
    server = AccountingServer(local_nas(), store.append, commit_delay=delay, commit_min=commit_min)
    transport = await start_accounting_server("127.0.0.1", 0, server)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    try:
        yield Bench(store, server, transport.get_extra_info("sockname")[1], client)
    finally:
        client.close()
        server.close()


def test_a_trickle_of_records_is_committed_together_and_each_answered_after_its_commit() -> None:
    """Six records sent 20 ms apart, one per wake-up: with a 2 s delay they are one batch
    (without the delay, each would be committed alone: the writer is idle when it comes)."""

    async def scenario() -> None:
        async with running(delay=2.0) as bench:
            for identifier in range(6):
                bench.send(identifier, f"T{identifier}")
                await asyncio.sleep(0.02)
            assert bench.store.batches == []  # still gathering: nothing committed, nothing answered
            answers = []
            for _ in range(6):
                answer = await bench.answer()
                assert f"T{answer[1]}" in bench.store.durable  # answered only once committed
                answers.append(answer[1])
            assert sorted(answers) == list(range(6))
            assert bench.store.batches == [[f"T{i}" for i in range(6)]]

    asyncio.run(scenario())


def test_a_batch_of_commit_min_records_is_committed_without_waiting_for_the_delay() -> None:
    async def scenario() -> None:
        async with running(delay=FOREVER, commit_min=16) as bench:
            send_starts(bench.client, bench.port, 16, "M", "alice")
            answers = await receive_answers(asyncio.get_running_loop(), bench.client, 16)
            assert {answer[1] for answer in answers} == set(range(16))
            assert bench.store.batches == [[f"M{i}" for i in range(16)]]

    asyncio.run(scenario())


def test_after_a_large_batch_the_next_one_starts_at_once_whatever_its_size() -> None:
    """A saturating load: what piled up while a large batch committed goes next, without the
    delay (waiting would leave the writer idle while the load is heavy)."""

    async def scenario() -> None:
        async with running(delay=FOREVER, commit_min=16) as bench:
            send_starts(bench.client, bench.port, 20, "L", "alice")
            await receive_answers(asyncio.get_running_loop(), bench.client, 20)
            bench.send(100, "S100")
            assert (await bench.answer())[1] == 100
            assert bench.store.batches[-1] == ["S100"]
            # That batch was small: the load is light again, and the next record waits.
            bench.send(101, "S101")
            await asyncio.sleep(0.3)
            assert "S101" not in bench.store.durable

    asyncio.run(scenario())


def test_a_lone_record_is_committed_and_answered_when_its_delay_is_over() -> None:
    async def scenario() -> None:
        async with running(delay=0.2) as bench:
            bench.send(7, "A7")
            answer = await bench.answer()
            assert (answer[0], answer[1]) == (5, 7)
            assert bench.store.batches == [["A7"]]

    asyncio.run(scenario())


def test_records_waiting_for_the_delay_are_committed_at_once_when_the_site_stops_accepting() -> None:
    """Fenced (set from the site controller's thread): what was received while accepting is
    committed and answered now, not a delay later; what comes after is not answered."""

    async def scenario() -> None:
        async with running(delay=FOREVER) as bench:
            bench.send(1, "F1")
            await asyncio.sleep(0.2)
            assert bench.store.batches == []  # waiting for more
            fence = threading.Thread(target=setattr, args=(bench.server, "accepting", False))
            fence.start()
            fence.join()
            assert (await bench.answer())[1] == 1 and bench.store.batches == [["F1"]]
            bench.send(2, "F2")
            await asyncio.sleep(0.3)
            assert bench.store.batches == [["F1"]]

    asyncio.run(scenario())


def test_without_a_delay_an_idle_server_commits_a_lone_record_at_once() -> None:
    """``radius_commit_delay_ms = 0``: the behaviour before the delay (each record that finds
    the writer idle is committed alone)."""

    async def scenario() -> None:
        async with running(delay=0.0) as bench:
            for identifier in range(3):
                bench.send(identifier, f"Z{identifier}")
                await bench.answer()
            assert bench.store.batches == [["Z0"], ["Z1"], ["Z2"]]

    asyncio.run(scenario())
