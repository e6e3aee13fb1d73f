"""Guarantee 1 at the adapter: no Accounting-Response unless the sink made the record durable.
While the store fails the BNG hears nothing (and retransmits); once it recovers, the
retransmission is stored and answered."""

from __future__ import annotations

import asyncio
import socket

from adapters.radius.codec import encode_accounting_request
from adapters.radius.registry import NasEntry, NasRegistry
from adapters.radius.server import AccountingServer, start_accounting_server
from domain.accounting import AccountingRecord

SECRET = b"durable"


def local_nas() -> NasRegistry:
    """A registry holding one NAS at 127.0.0.1 (where the tests send from)."""
    registry = NasRegistry()
    registry.load([NasEntry(id="nas-1", name="bng", address="127.0.0.1", secret=SECRET, vendor="mikrotik",
                            require_message_authenticator=False)])
    return registry


class FlakyStore:
    def __init__(self) -> None:
        self.down = True
        self.records: list[AccountingRecord] = []

    def append(self, records: list[AccountingRecord]) -> list[bool]:
        if self.down:
            raise OSError("database is unavailable")
        self.records.extend(records)
        return [True] * len(records)


def test_no_answer_while_the_store_is_down_then_the_retransmission_is_answered() -> None:
    async def scenario() -> None:
        registry = local_nas()
        store = FlakyStore()
        server = AccountingServer(registry, store.append)
        transport = await start_accounting_server("127.0.0.1", 0, server)
        port = transport.get_extra_info("sockname")[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        packet = encode_accounting_request(42, SECRET, {"Acct-Status-Type": "Start", "Acct-Session-Id": "D1",
                                                        "User-Name": "alice"})

        async def exchange() -> bytes | None:
            client.sendto(packet, ("127.0.0.1", port))
            try:
                return await asyncio.wait_for(loop.sock_recv(client, 4096), timeout=0.5)
            except TimeoutError:
                return None

        try:
            assert await exchange() is None  # store down: silence, nothing recorded
            assert store.records == []
            store.down = False
            answer = await exchange()  # the BNG's retransmission (same Identifier)
            assert answer is not None and answer[0] == 5 and answer[1] == 42
            assert [r.acct_session_id for r in store.records] == ["D1"]
        finally:
            client.close()
            server.close()

    asyncio.run(scenario())


class BatchingStore:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def append(self, records: list[AccountingRecord]) -> list[bool]:
        self.batches.append([r.acct_session_id for r in records])
        return [True] * len(records)


def send_starts(client: socket.socket, port: int, count: int, prefix: str, user: str) -> None:
    """``count`` Accounting-Request Starts, Identifiers 0..count-1, without yielding."""
    for identifier in range(count):
        client.sendto(encode_accounting_request(identifier, SECRET, {
            "Acct-Status-Type": "Start", "Acct-Session-Id": f"{prefix}{identifier}", "User-Name": user}),
            ("127.0.0.1", port))


async def receive_answers(loop: asyncio.AbstractEventLoop, client: socket.socket, count: int) -> list[bytes]:
    """Answers until ``count`` distinct Identifiers have come (5 s each at most)."""
    client.setblocking(False)
    answers: list[bytes] = []
    while len({answer[1] for answer in answers}) < count:
        answers.append(await asyncio.wait_for(loop.sock_recv(client, 4096), timeout=5))
    return answers


def test_a_burst_already_queued_in_the_socket_is_one_batch_and_every_record_is_answered() -> None:
    """Group commit: datagrams waiting in the socket when the server wakes are read in the
    same turn and committed together (not the first alone, then the rest), and each gets
    its own Accounting-Response with its own Identifier after the commit."""

    async def scenario() -> None:
        registry = local_nas()
        store = BatchingStore()
        server = AccountingServer(registry, store.append)
        transport = await start_accounting_server("127.0.0.1", 0, server)
        port = transport.get_extra_info("sockname")[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        loop = asyncio.get_running_loop()
        try:
            # Sent without yielding to the event loop: all 20 wait in the server's socket.
            send_starts(client, port, 20, "B", "alice")
            answers = await receive_answers(loop, client, 20)
            assert {answer[0] for answer in answers} == {5}  # Accounting-Response
            assert {answer[1] for answer in answers} == set(range(20))
            assert store.batches == [[f"B{i}" for i in range(20)]]
        finally:
            client.close()
            server.close()

    asyncio.run(scenario())


def test_every_packet_is_counted_by_code_and_answers_go_out_when_the_socket_is_busy() -> None:
    """The packets counter is added to once per wake-up (per code), so a burst counts every
    packet; answers go on the socket directly, or through the transport's queue when the
    socket cannot take them (here: a full send buffer), and none is lost either way."""
    from adapters import metrics

    def count(code: int) -> float:
        return metrics.RADIUS_PACKETS.labels(str(code))._value.get()

    async def scenario() -> None:
        registry = local_nas()
        store = BatchingStore()
        server = AccountingServer(registry, store.append)
        transport = await start_accounting_server("127.0.0.1", 0, server)
        port = transport.get_extra_info("sockname")[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        loop = asyncio.get_running_loop()
        requests_before, unsupported_before = count(4), count(1)
        refusals = 0
        real_sock = server.sock

        class RefusingSocket:  # the kernel's "try again" on every other send
            def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
                nonlocal refusals
                refusals += 1
                if refusals % 2:
                    raise BlockingIOError
                assert real_sock is not None
                return real_sock.sendto(data, addr)

            def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
                assert real_sock is not None
                return real_sock.recvfrom(size)

        server.sock = RefusingSocket()  # type: ignore[assignment]
        try:
            send_starts(client, port, 30, "C", "bob")
            client.sendto(bytes([1, 99, 0, 20]) + bytes(16), ("127.0.0.1", port))  # Access-Request
            answers = await receive_answers(loop, client, 30)
            assert {answer[1] for answer in answers} == set(range(30))
            assert count(4) - requests_before == 30 and count(1) - unsupported_before == 1
            assert refusals >= 2
        finally:
            client.close()
            server.close()

    asyncio.run(scenario())
