"""The chain's fast encoding is the reference encoding, byte for byte: the canonical header
written without json.dumps, the link hashed in one call, and the chainer's raw read of the
store, compared with what links were always made of (json.dumps of the header, sha256 fed
piece by piece, events read through SQLAlchemy with UUIDs)."""

from __future__ import annotations

import hashlib
import json
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.audit import chain_step, verify_store
from adapters.event_log import LedgerStore, _uuid_text
from adapters.followers import drain
from api.bootstrap import Runtime
from ledger.chain import GENESIS, chain, header, link

from .support import ingest, record
from .test_audit import T0, populate, store  # noqa: F401  (the store fixture)


def reference_link(prev_hash: str, position: int, originator_id: UUID | str, version: int, topic: str,
                   state: bytes) -> str:
    """The link as it was first written (before the fast path): any change of bytes breaks
    every stored chain and exported log."""
    head = json.dumps({"originator_id": str(originator_id), "originator_version": version,
                       "position": position, "topic": topic}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(head.encode() + b"\n" + state)
    return digest.hexdigest()


ints = st.integers(min_value=-(2**70), max_value=2**70)
# Mostly ASCII, quotes, backslashes, DEL and control characters included: where json.dumps
# escapes and where it does not.
edges = ['"', "\\", "\x7f", "\n", "\x00", "\u00e9", "\u2028"]
ascii_text = st.text(alphabet=st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + edges * 8), max_size=40)
ids = st.one_of(st.uuids(), st.uuids().map(str), ascii_text, st.text(max_size=40))
topics = st.one_of(ascii_text, st.text(max_size=60),
                   st.from_regex(r"[a-z_.]{1,20}:[A-Za-z.]{1,30}", fullmatch=True))


@settings(max_examples=500, deadline=None)
@given(prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), position=ints, oid=ids,
       version=ints, topic=topics, state=st.binary(max_size=200))
def test_header_and_link_are_the_reference_bytes(prev: str, position: int, oid: UUID | str, version: int,
                                                  topic: str, state: bytes) -> None:
    expected = json.dumps({"originator_id": str(oid), "originator_version": version, "position": position,
                           "topic": topic}, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert header(position, oid, version, topic) == expected
    assert link(prev, position, oid, version, topic, state) == reference_link(prev, position, oid, version, topic,
                                                                               state)


@given(value=st.uuids())
def test_stored_ids_read_as_str_uuid(value: UUID) -> None:
    # SQLite holds 32 lowercase hex digits, PostgreSQL gives UUIDs; other spellings are parsed.
    for stored in (value.hex, value, str(value), value.hex.upper()):
        assert _uuid_text(stored) == str(value)


def test_chainer_links_what_the_store_holds(runtime: Runtime, store: LedgerStore) -> None:  # noqa: F811
    """The chainer's raw read of the store gives the links the SQLAlchemy read gives."""
    populate(runtime, store)
    with store.engine.connect() as conn:
        rows = store.events.select(conn, 0, None, 100_000)
    expected = chain(GENESIS, rows)
    assert [(p, prev, h) for p, prev, h in expected] == [
        (e.position, e.prev_hash, e.hash) for e in store.chained_events(0, 100_000)]
    # And once more from scratch, in small steps (each step starts from the stored head).
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM log_chain")
    drain(chain_step(store, batch=7))
    assert [(e.position, e.prev_hash, e.hash) for e in store.chained_events(0, 100_000)] == expected
    assert expected[-1][2] == reference_chain_head(rows)


def reference_chain_head(rows: list[tuple[int, UUID, int, str, bytes]]) -> str:
    prev = GENESIS
    for position, oid, version, topic, state in rows:
        prev = reference_link(prev, position, oid, version, topic, state)
    return prev


def test_a_paced_chainer_gathers_events_then_links_them_all(runtime: Runtime, store: LedgerStore,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("adapters.audit.time.monotonic", lambda: clock[0])
    populate(runtime, store)
    paced = chain_step(store, min_interval=0.25)
    ingest(runtime, record("start", "p1", at=T0 + 5000))
    assert paced() > 0  # the first step links at once
    ingest(runtime, record("start", "p2", at=T0 + 5100))
    assert paced() == 0 and verify_store(store).unchained > 0  # gathering
    clock[0] += 0.3
    assert paced() > 0
    result = verify_store(store)
    assert result.verdict.ok and result.unchained == 0 and result.verdict.checked == store.head_position()
