"""A small HTTP/1.1 keep-alive client for the bench's pollers (the freshness prober).

The prober runs on the same two cores as the system it measures. httpx's AsyncClient spent
about 6 ms of CPU per balance read there (median of 3 rounds of 1,600 reads, 16 at a time;
this client ~0.2 ms), several times what the serve process spent answering: at the prober's
up to 320 reads/s that was most of a core taken from the pipeline being measured. The
requests, their schedule and what is checked are the same with this client; it only costs
less (a pool of plain asyncio connections, the request bytes built once per path,
Content-Length bodies only, which is all uvicorn sends for a JSON answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson


class HttpError(Exception):
    """A status other than 200 (the body is in the message)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class KeepAliveClient:
    """GET requests with JSON answers over up to ``connections`` kept-alive connections."""

    def __init__(self, host: str, port: int, headers: dict[str, str], *, connections: int = 16,
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in ({"Host": f"{host}:{port}"} | headers).items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(connections)
        self._requests: dict[str, bytes] = {}

    async def get_json(self, path: str) -> Any:
        """The decoded JSON body of ``GET path``; HttpError on another status than 200. A
        connection the server closed while idle is replaced and the request sent again
        (GET is safe to repeat)."""
        request = self._requests.get(path)
        if request is None:
            request = self._requests[path] = f"GET {path} HTTP/1.1\r\n{self._headers}\r\n".encode()
        async with self._slots:
            for attempt in range(3):
                reused = bool(self._idle)
                connection = self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
                try:
                    status, body, keep = await asyncio.wait_for(self._exchange(connection, request), self.timeout)
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    self._discard(connection)
                    if attempt == 2 or not reused:
                        raise
                    continue
                except BaseException:
                    self._discard(connection)
                    raise
                if keep:
                    self._idle.append(connection)
                else:
                    self._discard(connection)
                if status != 200:
                    raise HttpError(status, body)
                return orjson.loads(body)
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        request: bytes) -> tuple[int, bytes, bool]:
        reader, writer = connection
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise ConnectionError("chunked answers are not supported by the bench's client")
        return status, await reader.readexactly(length), keep

    @staticmethod
    def _discard(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        with contextlib.suppress(Exception):
            connection[1].close()

    async def close(self) -> None:
        while self._idle:
            self._discard(self._idle.pop())

    async def __aenter__(self) -> KeepAliveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
