"""The hash chain over the ledger's notification log (tamper evidence, guarantee 6).

Each link is sha256(previous hash + canonical encoding of one stored event). The canonical
encoding is a JSON header with sorted keys (position, originator id, version, topic) then the
stored state bytes exactly as the event store holds them, so the chain proves the bytes,
not a re-serialisation of them. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from uuid import UUID

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """One stored event with its link: what `audit verify` checks and the standby imports."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    prev_hash: str
    hash: str


def _json_string(text: str) -> str:
    """``text`` as json.dumps writes it (ensure_ascii): printable ASCII without a quote or a
    backslash stands as it is; anything else is left to json.dumps."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


# A log has a few dozen topics: each one's JSON form is worked out once.
_topic_json: dict[str, str] = {}


def header(position: int, originator_id: UUID | str, originator_version: int, topic: str) -> bytes:
    """The canonical header of one event, newline included: byte for byte what
    ``json.dumps({...}, sort_keys=True, separators=(",", ":"))`` gives for its four fields,
    written out directly (json.dumps with a dict was most of the cost of a link)."""
    if type(position) is not int or type(originator_version) is not int:
        return _header_by_json(position, originator_id, originator_version, topic)
    quoted_topic = _topic_json.get(topic)
    if quoted_topic is None:
        quoted_topic = _json_string(topic)
        if len(_topic_json) < 4096:
            _topic_json[topic] = quoted_topic
    oid = str(originator_id) if type(originator_id) is UUID else _json_string(str(originator_id))[1:-1]
    return (f'{{"originator_id":"{oid}","originator_version":{originator_version},'
            f'"position":{position},"topic":{quoted_topic}}}\n').encode()


def _header_by_json(position: int, originator_id: UUID | str, originator_version: int, topic: str) -> bytes:
    """The reference form of the header (what links were always made of)."""
    return json.dumps({"originator_id": str(originator_id), "originator_version": originator_version,
                       "position": position, "topic": topic}, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def canonical(position: int, originator_id: UUID | str, originator_version: int, topic: str,
              state: bytes) -> bytes:
    """The bytes a link hashes for one event."""
    return header(position, originator_id, originator_version, topic) + bytes(state)


def link(prev_hash: str, position: int, originator_id: UUID | str, originator_version: int, topic: str,
         state: bytes) -> str:
    """The hash of one event given the hash of the event before it (GENESIS for the first):
    sha256(previous hash, newline, canonical bytes), hashed in one call."""
    return sha256(b"".join((prev_hash.encode("ascii"), b"\n",
                            header(position, originator_id, originator_version, topic), state))).hexdigest()


def chain(prev_hash: str, events: Iterable[tuple[int, UUID | str, int, str, bytes]]) -> list[tuple[int, str, str]]:
    """(position, prev_hash, hash) for consecutive events following ``prev_hash``."""
    links = []
    for position, originator_id, version, topic, state in events:
        current = link(prev_hash, position, originator_id, version, topic, state)
        links.append((position, prev_hash, current))
        prev_hash = current
    return links


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of checking a chain: ``broken_at`` is the first bad position, or None."""

    checked: int
    head_position: int
    head_hash: str
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


class ChainVerifier:
    """Checks events one by one, in position order, against their stored links."""

    def __init__(self, prev_hash: str = GENESIS, after: int = 0) -> None:
        self.prev_hash = prev_hash
        self.position = after
        self.checked = 0
        self.broken_at: int | None = None
        self.reason = ""

    def feed(self, event: ChainedEvent) -> bool:
        """False (and remembers where) at the first event that does not chain."""
        if self.broken_at is not None:
            return False
        problem = ""
        if event.position <= self.position:
            problem = f"position {event.position} does not follow {self.position}"
        elif event.prev_hash != self.prev_hash:
            problem = "its previous hash is not the hash of the event before it"
        elif link(self.prev_hash, event.position, event.originator_id, event.originator_version,
                  event.topic, event.state) != event.hash:
            problem = "its content does not match its hash"
        if problem:
            self.broken_at, self.reason = event.position, problem
            return False
        self.prev_hash, self.position = event.hash, event.position
        self.checked += 1
        return True

    def verdict(self) -> Verdict:
        return Verdict(checked=self.checked, head_position=self.position, head_hash=self.prev_hash,
                       broken_at=self.broken_at, reason=self.reason)
