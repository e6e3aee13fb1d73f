"""The bench client's own CPU on asyncio's event loop and on uvloop, against trivial servers in
another process: the freshness prober's keep-alive reads (``bench/http_client.py``) and the
paced RADIUS load generator (``bench/loadgen.py``). Both share the two cores with the system
they measure, so what they cost is taken from it.

`python -m bench.client_loop [--rounds 5] [--reads 3200] [--rate 2000] [--sessions 2000]`
(the loops alternated round by round; CPU of this process per GET / per request).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import resource
import socket
import statistics
from typing import Any

from adapters import event_loop

from .http_client import KeepAliveClient
from .loadgen import run_load
from .workload import build_sessions

SECRET = "client-loop"
BODY = b'{"balance_exact":"12.5","currency":"EUR"}'
LOOPS = ("asyncio", "uvloop")


def _http_server(ports: Any) -> None:
    """Answers every request on a connection with the same small JSON body."""

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY))
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ports.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    event_loop.run(main())


def _radius_responder(ports: Any) -> None:
    """Answers every Accounting-Request with a valid, empty Accounting-Response."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ports.put(sock.getsockname()[1])
    key = SECRET.encode()
    while True:
        data, addr = sock.recvfrom(4096)
        header = bytes([5, data[1], 0, 20])
        sock.sendto(header + hashlib.md5(header + data[4:20] + key).digest(), addr)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _reads(port: int, count: int) -> None:
    async with KeepAliveClient("127.0.0.1", port, {"Authorization": "Bearer x"}, connections=16) as client:
        for _ in range(count // 16):
            await asyncio.gather(*(client.get_json(f"/v1/accounts/{i}/balance") for i in range(16)))


def _start(target: Any) -> int:
    ports: Any = multiprocessing.Queue()
    multiprocessing.Process(target=target, args=(ports,), daemon=True).start()
    return int(ports.get(timeout=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=3200)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--sessions", type=int, default=2000)
    args = parser.parse_args()
    http_port, radius_port = _start(_http_server), _start(_radius_responder)
    per_get: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    per_request: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    rates: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for index in range(args.rounds):
        for loop in LOOPS:  # alternated: each loop sees the same neighbours
            before = _cpu()
            event_loop.run(_reads(http_port, args.reads), loop)
            per_get[loop].append((_cpu() - before) / args.reads * 1e6)
            sessions = build_sessions(args.sessions, 3, seed=index, tag=f"C{index}{loop}")
            before = _cpu()
            load = event_loop.run(run_load("127.0.0.1", radius_port, SECRET, sessions, rate=args.rate), loop)
            per_request[loop].append((_cpu() - before) / max(1, load.acknowledged) * 1e6)
            rates[loop].append(load.rate)
            print(f"round {index} {loop}: prober {per_get[loop][-1]:,.0f} us/GET, load generator "
                  f"{per_request[loop][-1]:,.0f} us/request at {load.rate:,.0f}/s", flush=True)
    print(f"\nmedians of {args.rounds} rounds (CPU of this process)")
    for loop in LOOPS:
        print(f"  {loop:<8} prober {statistics.median(per_get[loop]):>6,.0f} us/GET   load generator "
              f"{statistics.median(per_request[loop]):>6,.0f} us/request at {statistics.median(rates[loop]):,.0f}/s")


if __name__ == "__main__":
    main()
