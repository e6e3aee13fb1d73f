"""The accounting a WISP's BNG sends: N subscribers, one session each, Start, k Interim-Updates
with growing cumulative 64-bit counters (so Gigawords wrap), and Stop. Seeded: the same seed
gives the same packets, byte for byte, for every system under test."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

BASE_TIME = 1_795_000_000  # 2026-11-18T11:06:40Z: a fixed clock, so runs are comparable
INTERIM_SECONDS = 300
NAS_IP = "127.0.0.1"

# Per interval: up to 3 GB down and 0.6 GB up, so most sessions pass 2**32 octets (Gigawords).
MAX_DOWN_STEP = 3_000_000_000
MAX_UP_STEP = 600_000_000


@dataclass(frozen=True, slots=True)
class Packet:
    """One Accounting-Request to send: the session it belongs to and its cumulative counters."""

    session: int
    status: str  # Start | Interim-Update | Stop
    attributes: dict[str, str | int]
    upload: int
    download: int


@dataclass(slots=True)
class Session:
    index: int
    username: str
    acct_session_id: str
    packets: list[Packet] = field(default_factory=list)


def username(index: int) -> str:
    return f"sub{index:07d}"


def build_sessions(subscribers: int, interims: int, *, seed: int, tag: str, stop: bool = True,
                   first: int = 0) -> list[Session]:
    """Sessions for subscribers ``first .. first+subscribers-1``; ``tag`` makes the
    Acct-Session-Ids of one run distinct from every other run's."""
    rng = random.Random(seed)
    sessions = []
    for offset in range(subscribers):
        index = first + offset
        user = username(index)
        session = Session(index, user, f"{tag}-{index:07d}")
        start = BASE_TIME + rng.randrange(INTERIM_SECONDS)
        ip = f"100.{64 + index // 65536 % 64}.{index // 256 % 256}.{index % 256}"
        common: dict[str, str | int] = {
            "User-Name": user, "Acct-Session-Id": session.acct_session_id, "NAS-IP-Address": NAS_IP,
            "NAS-Port": index % 65536, "Framed-IP-Address": ip,
            "Calling-Station-Id": f"02:00:{index >> 24 & 255:02x}:{index >> 16 & 255:02x}:"
                                  f"{index >> 8 & 255:02x}:{index & 255:02x}",
        }
        session.packets.append(Packet(index, "Start", common | {
            "Acct-Status-Type": "Start", "Event-Timestamp": start, "Acct-Delay-Time": 0}, 0, 0))
        up = down = 0
        steps = interims + (1 if stop else 0)
        for step in range(1, steps + 1):
            up += rng.randrange(MAX_UP_STEP)
            down += rng.randrange(MAX_DOWN_STEP)
            status = "Stop" if stop and step == steps else "Interim-Update"
            at = start + INTERIM_SECONDS * step
            attributes = common | {
                "Acct-Status-Type": status, "Event-Timestamp": at, "Acct-Delay-Time": 0,
                "Acct-Session-Time": at - start,
                "Acct-Input-Octets": up & 0xFFFFFFFF, "Acct-Input-Gigawords": up >> 32,
                "Acct-Output-Octets": down & 0xFFFFFFFF, "Acct-Output-Gigawords": down >> 32,
                "Acct-Input-Packets": up // 1200 & 0xFFFFFFFF, "Acct-Output-Packets": down // 1200 & 0xFFFFFFFF,
            }
            if status == "Stop":
                attributes["Acct-Terminate-Cause"] = "User-Request"
            session.packets.append(Packet(index, status, attributes, up, down))
        sessions.append(session)
    return sessions
