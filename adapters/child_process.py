"""Child processes of `wispgate serve` (its RADIUS listener, its projector): how one is started
with a socket pair to its parent, and how it makes sure it dies with that parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection


def spawn(module: str) -> tuple[subprocess.Popen[bytes], socket.socket, Connection]:
    """Start ``python -m <module> FD PARENT_PID``, FD being the child's end of a new socket
    pair. Returns the process, the parent's end (keep it to shut it down: closing a duplicate
    alone would not wake a reader blocked on it) and a Connection on a duplicate of that end."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno()), str(os.getpid())],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    return process, ours, Connection(os.dup(ours.fileno()))


def die_with_parent(parent_pid: int) -> None:
    """In the child: ask Linux to SIGKILL this process when the parent dies (PR_SET_PDEATHSIG,
    so a SIGKILLed `serve` leaves no orphan holding a port or a store); exit if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(0)


def child_main(argv: list[str], run: Callable[[Connection], int]) -> int:
    """A child's entry point (``python -m <module> FD PARENT_PID``): die with the parent, leave
    Ctrl-C to the parent (which stops us), then ``run`` on the connection; 0 when the parent
    stopped before sending anything."""
    fd, parent_pid = int(argv[0]), int(argv[1])
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        return run(conn)
    except EOFError:  # the parent stopped before it sent the settings
        return 0
    finally:
        with contextlib.suppress(OSError):
            conn.close()
