"""A TCP link between two sites that a test can cut (connections refused) and heal, or
heal with a byte budget after which it cuts itself (a link that breaks in the middle of a
transfer)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Link:
    """Forwards 127.0.0.1:port to a target port; ``cut`` refuses and drops connections."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.budget: int | None = None  # bytes still forwarded towards the target; None: unlimited
        self.heal()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def heal(self, budget: int | None = None) -> None:
        """Accept and forward again; with ``budget``, cut once that many bytes have gone
        towards the target (answers coming back are not counted)."""
        self.budget = budget
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            if self.listener is not None:
                # shutdown wakes the thread blocked in accept(); close alone would not.
                with contextlib.suppress(OSError):
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.listener is not listener:  # cut meanwhile
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for source, sink, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, counted), daemon=True).start()

    def _spend(self, size: int) -> int:
        """How many of ``size`` bytes may still go towards the target."""
        with self.lock:
            if self.budget is None:
                return size
            allowed = min(size, self.budget)
            self.budget -= allowed
            return allowed

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                allowed = self._spend(len(data)) if counted else len(data)
                sink.sendall(data[:allowed])
                if allowed < len(data):
                    self.cut()  # the budget is spent in the middle of this transfer
                    return
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
