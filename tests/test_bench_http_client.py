"""The freshness prober's HTTP client (bench/http_client.py): answers decoded, statuses other
than 200 raised, and a kept-alive connection the server closed meanwhile replaced."""

from __future__ import annotations

import asyncio

import pytest

from bench.http_client import HttpError, KeepAliveClient


async def _serve(handle_count: list[int], close_after: int) -> asyncio.Server:
    """A server answering GET /n/<k> with {"k": k} (404 for other paths), closing each
    connection after ``close_after`` answers without saying so (as an idle timeout does)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handle_count[0] += 1
        for _ in range(close_after):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            path = head.split(b" ")[1].decode()
            status, body = (200, f'{{"k": {path[3:]}}}') if path.startswith("/n/") else (404, '{"title":"no"}')
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                         f"content-length: {len(body)}\r\n\r\n{body}".encode())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_answers_errors_and_connections_closed_by_the_server() -> None:
    async def scenario() -> None:
        connections = [0]
        server = await _serve(connections, close_after=2)
        port = server.sockets[0].getsockname()[1]
        async with server, KeepAliveClient("127.0.0.1", port, {"Authorization": "Bearer t"}, connections=2) as client:
            answers = [await client.get_json(f"/n/{k}") for k in range(7)]
            assert answers == [{"k": k} for k in range(7)]
            assert 4 <= connections[0] <= 7  # reused while the server kept them, replaced after
            many = await asyncio.gather(*(client.get_json(f"/n/{k}") for k in range(20)))
            assert many == [{"k": k} for k in range(20)]
            with pytest.raises(HttpError) as refused:
                await client.get_json("/other")
            assert refused.value.status == 404

    asyncio.run(scenario())
