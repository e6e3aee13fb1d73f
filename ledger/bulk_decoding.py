"""Decoding stored events read in bulk with orjson instead of the standard library's JSON decoder.

eventsourcing's ``JSONTranscoder.decode`` parses a state with ``json.loads`` and an object hook
that turns each ``{"_type_": name, "_data_": value}`` object into the registered type (UUID,
Decimal, datetime). A billing run decodes thousands of Account events per batch, and the
standard decoder with its hook was about half of loading them. ``decode_state`` parses with
orjson and applies the same hook to every object, innermost first, as ``json.loads`` calls
it; a state orjson does not parse as the standard decoder would (a float anywhere, which is
also what orjson makes of integers beyond 64 bits; NaN, infinities or lone surrogates, which
orjson refuses) or that the hook refuses goes to the transcoder itself, so the result, or
the error, is always the transcoder's (``tests/test_bulk_decoding.py`` compares them).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoder


class _NotQuick(Exception):
    """A state the quick way does not decode exactly as the transcoder: the transcoder decides."""


def decode_state(transcoder: Transcoder, data: bytes) -> Any:
    """``transcoder.decode(data)`` for eventsourcing's JSON transcoder (and its subclasses
    that keep its decoding), parsed by orjson."""
    if not isinstance(transcoder, JSONTranscoder) or type(transcoder).decode is not JSONTranscoder.decode:
        return transcoder.decode(data)
    try:
        return _hooked(orjson.loads(data), transcoder.names)
    except (_NotQuick, orjson.JSONDecodeError, KeyError, TypeError):
        return transcoder.decode(data)


def _hooked(value: Any, names: dict[str, Any]) -> Any:
    """``value`` (as orjson parsed it) with the object hook applied, innermost first."""
    kind = type(value)
    if kind is dict or kind is list:
        for place, item in (value.items() if kind is dict else enumerate(value)):
            item_kind = type(item)
            if item_kind is dict or item_kind is list:
                new = _hooked(item, names)
                if new is not item:
                    value[place] = new
            elif item_kind is float:
                raise _NotQuick
        if kind is dict and len(value) == 2 and "_type_" in value and "_data_" in value:
            return names[value["_type_"]].decode(value["_data_"])  # unknown name: KeyError
        return value
    if kind is float:
        raise _NotQuick
    return value


class _QuickTranscoder(Transcoder):
    """A transcoder that encodes as ``transcoder`` and decodes by ``decode_state``."""

    def __init__(self, transcoder: Transcoder) -> None:
        self.transcoder = transcoder

    def encode(self, obj: Any) -> bytes:
        return self.transcoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        return decode_state(self.transcoder, data)


def quick_mapper(mapper: Mapper[UUID]) -> Mapper[UUID]:
    """A mapper that turns stored events into domain events as ``mapper`` does (eventsourcing's
    own ``to_domain_event``: topics, ids, upcasting, decryption, decompression), decoding the
    JSON by ``decode_state``. Made once per mapper."""
    found: Mapper[UUID] | None = getattr(mapper, "_quick_mapper", None)
    if found is None:
        found = Mapper(transcoder=_QuickTranscoder(mapper.transcoder), compressor=mapper.compressor,
                       cipher=mapper.cipher)
        mapper._quick_mapper = found  # type: ignore[attr-defined]
    return found


def to_domain_event(mapper: Mapper[UUID], stored: StoredEvent) -> Any:
    """``mapper.to_domain_event(stored)``, decoded by ``decode_state``."""
    return quick_mapper(mapper).to_domain_event(stored)


__all__ = ["decode_state", "quick_mapper", "to_domain_event"]
