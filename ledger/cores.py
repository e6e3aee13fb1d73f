"""Whether a second process would run beside this one: a rebuild and a billing run split their
work over two processes only when a second core is free. On a machine whose cores are all
busy, two processes do a little more work in total and finish later than one (measured: a
rebuild of the bench store 10,700 against 14,600 events/s at load 18 on 2 cores; a 10,000-
account billing run 57-103 s against 45 s)."""

from __future__ import annotations

import os
import time


def running_tasks() -> int:
    """Tasks running or runnable now, this one included (Linux's /proc/loadavg)."""
    with open("/proc/loadavg") as loadavg:
        return int(loadavg.read().split()[3].split("/")[0])


def second_core_free() -> bool:
    """Whether a second core is there and idle now: the least running-task count of three
    looks 2 ms apart leaves a core free; where that cannot be read, whether there are two
    cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return (os.cpu_count() or 1) >= 2
    if cores < 2:
        return False
    running = []
    try:
        for look in range(3):
            if look:
                time.sleep(0.002)
            running.append(running_tasks())
    except (OSError, ValueError, IndexError):
        return True
    return min(running) - 1 < cores - 1
