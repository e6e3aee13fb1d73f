"""The server's one-walk decode (``decode_accounting_with_response``) against the reference
path (``decode_accounting`` then ``encode_accounting_response``): on valid, mangled and
re-signed packets both drop for the same reason or give the same record and the same
Accounting-Response."""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.radius.codec import (
    PacketDropped,
    decode_accounting,
    decode_accounting_with_response,
    encode_accounting_request,
    encode_accounting_response,
)

from .test_radius_codec import NAS, NOW, SECRET, _base_packets, _mutate


def _outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except PacketDropped as dropped:
        return ("dropped", dropped.reason)


def _same_as_the_reference(data: bytes, require: bool) -> object:
    fast = _outcome(lambda: decode_accounting_with_response(
        data, SECRET, nas_id=NAS, received_at=NOW, require_message_authenticator=require))

    def reference() -> object:
        record = decode_accounting(data, SECRET, nas_id=NAS, received_at=NOW,
                                   require_message_authenticator=require)
        return record, encode_accounting_response(data, SECRET)

    expected = _outcome(reference)
    assert fast == expected, data.hex()
    return fast


def test_mutated_packets_decode_as_the_reference_path_does() -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (WISPGATE_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    bases = _base_packets()
    decoded = dropped = 0
    for _ in range(15_000):
        data = _mutate(rng, rng.choice(bases)) if rng.random() < 0.9 else rng.choice(bases)
        outcome = _same_as_the_reference(data, require=rng.random() < 0.3)
        if isinstance(outcome, tuple) and outcome[0] == "dropped":
            dropped += 1
        else:
            decoded += 1
    assert decoded > 1_000 and dropped > 1_000  # both sides of every check were reached


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=12),
    st.sampled_from([1, 2, 3, 7, 8]),
    st.booleans(),
)
def test_signed_packets_with_random_attributes_decode_as_the_reference_path_does(
    attrs: list[tuple[int, bytes]], status: int, message_authenticator: bool
) -> None:
    # Repeated record attributes, Proxy-States (33) among others, vendor attributes (26).
    packet = encode_accounting_request(
        7, SECRET, [(40, status.to_bytes(4, "big")), (44, b"sess"), *attrs],
        message_authenticator=message_authenticator)
    _same_as_the_reference(packet, require=False)
