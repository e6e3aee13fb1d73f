"""The ledger's event encoder: eventsourcing's JSON format, written by orjson.

Encoding stored events with the standard library was about a fifth of the rater's time per
accounting record (~20 us an event). ``FastJSONTranscoder`` writes the very same bytes with
orjson: values of the types the standard encoder writes natively are passed as they are,
UUIDs (which orjson would write as bare strings) are turned into eventsourcing's
``{"_type_": "uuid_hex", "_data_": ...}`` objects first, Decimal and datetime go through the
registered transcodings as before. Anything else (floats, subclasses, non-string keys,
integers beyond 64 bits) is left to the standard encoder, so the bytes never depend on
which encoder ran; ``tests/test_transcoder.py`` checks this on random values. Decoding is
unchanged (the standard library's).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Transcoder

# Written natively by both encoders, identically.
_PLAIN = frozenset({str, int, bool, type(None)})
# Turned into {"_type_", "_data_"} objects by the registered transcodings, in both.
_TRANSCODED = frozenset({Decimal, datetime})
_NATIVE = _PLAIN | _TRANSCODED
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


class _Unusual(Exception):
    """A value whose bytes only the standard encoder is trusted to write."""


class FastJSONTranscoder(JSONTranscoder):
    def encode(self, obj: Any) -> bytes:
        """The bytes JSONTranscoder.encode returns for ``obj``."""
        try:
            return orjson.dumps(self._prepare(obj), default=self._transcode, option=_OPTIONS)
        except (_Unusual, orjson.JSONEncodeError, TypeError):
            return super().encode(obj)

    def _prepare(self, value: Any) -> Any:
        """``value`` with its UUIDs as transcoded objects (the same object when it has none);
        _Unusual for anything only the standard encoder should write."""
        kind = type(value)
        if kind in _NATIVE:
            return value
        if kind is dict:
            prepared = None
            for key, item in value.items():
                if type(key) is not str:
                    raise _Unusual
                if type(item) in _NATIVE:
                    continue
                new = self._prepare(item)
                if new is not item:
                    if prepared is None:
                        prepared = dict(value)
                    prepared[key] = new
            return value if prepared is None else prepared
        if kind is list or kind is tuple:
            return [self._prepare(item) for item in value]
        if kind is UUID:
            return self._encode_obj(value)
        raise _Unusual

    def _transcode(self, value: Any) -> Any:
        if type(value) not in _TRANSCODED:
            raise _Unusual
        return self._prepare(self._encode_obj(value))


def with_fast_encoding(transcoder: Transcoder, register: Callable[[JSONTranscoder], None]) -> Transcoder:
    """What an application's ``construct_transcoder`` returns: ``transcoder`` replaced by a
    FastJSONTranscoder (with the application's transcodings registered) when it is
    eventsourcing's JSON transcoder, left alone when configured otherwise."""
    if type(transcoder) is not JSONTranscoder:
        return transcoder
    fast = FastJSONTranscoder()
    register(fast)
    return fast
