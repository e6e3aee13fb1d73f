"""An encoder per event class: the bytes of eventsourcing's mapper and JSON transcoder, made in
one pass over the event's fields.

Encoding a stored event was ~95k instructions, about a quarter of the rater's per record: the
mapper copies the event's dict, and the transcoder walks every value, calling back into Python
for each UUID, Decimal and datetime. The fields that can hold those are known from the event
class (its dataclass annotations), so for each class an encoder is generated once: straight-line
code that reads each field from the event's ``__dict__``, turns a UUID, Decimal or datetime in
the field declared so into eventsourcing's ``{"_type_", "_data_"}`` object, checks that every
other value is plain (str, int, bool, None, and lists/dicts of those with str keys), and hands
the result to orjson once. Whatever the encoder was not made for (a value of another type than
its field declares, a float or a UUID inside a list, an integer beyond 64 bits, the fields in
another order, a ``class_version``) falls back to the mapper's own path for that event, so the
stored bytes never depend on which path ran; ``tests/test_event_encoders.py`` holds the two
byte-equal on random events.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic

from .transcoder import FastJSONTranscoder

_PLAIN = frozenset({str, int, bool, type(None)})
# Anything orjson would write in its own way (UUID, dataclass, subclasses) raises instead. Datetimes
# reach it only as the encoder passes them: in UTC, where orjson writes what isoformat() returns.
_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
# The transcodings the generated code writes inline, as eventsourcing's own classes write them.
_INLINE = {UUID: UUIDAsHex, Decimal: DecimalAsStr, datetime: DatetimeAsISO}


class _Unusual(Exception):
    """A value this class's encoder was not made for: the mapper's own path writes it."""


def plain_tree(value: Any) -> bool:
    """Whether ``value`` is made only of str, int, bool and None, in lists, tuples and dicts
    with str keys: what orjson and the standard encoder write alike with no transcoding."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _PLAIN and not plain_tree(item)):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(item) in _PLAIN or plain_tree(item) for item in value)
    return kind in _PLAIN


# The checks of a tree field declared a list of dicts, a list or a dict, written inline (a Python
# call per container was most of the check): plain_tree only for what is nested deeper.
_TREE_CHECKS = {
    "list[dict": ["    if type({v}) is list:",
                  "        for x in {v}:",
                  "            if type(x) is dict:",
                  "                for k, y in x.items():",
                  "                    if type(k) is not str or (type(y) not in PLAIN and not plain_tree(y)):",
                  "                        raise Unusual",
                  "            elif type(x) not in PLAIN and not plain_tree(x):",
                  "                raise Unusual"],
    "list[": ["    if type({v}) is list:",
              "        for x in {v}:",
              "            if type(x) not in PLAIN and not plain_tree(x):",
              "                raise Unusual"],
    "dict[": ["    if type({v}) is dict:",
              "        for k, y in {v}.items():",
              "            if type(k) is not str or (type(y) not in PLAIN and not plain_tree(y)):",
              "                raise Unusual"],
}


# How each transcoded type is written inline: its transcoding's name and an expression of its data
# (what UUIDAsHex.encode, DecimalAsStr.encode and DatetimeAsISO.encode return; see _STRICT for UTC).
_TRANSCODED = {
    "UUID": ("uuid_hex", "'%032x' % {v}.int"),
    "Decimal": ("decimal_str", "str({v})"),
    "datetime": ("datetime_iso", "{v} if {v}.tzinfo is UTC else {v}.isoformat()"),
}


def _kind(annotation: Any) -> str:
    """How a field declared ``annotation`` is written: a transcoded scalar (``UUID``,
    ``Decimal``, ``datetime``, possibly None), a plain scalar, or a tree to check."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    parts = {part.strip() for part in text.replace("Optional[", "").rstrip("]").split("|")} - {"None"}
    if len(parts) == 1:
        (name,) = parts
        if name in ("UUID", "Decimal", "datetime"):
            return name
        if name in ("str", "int", "bool"):
            return "plain"
        for shape in _TREE_CHECKS:
            if name.startswith(shape):
                return shape
    return "tree"


def build_encoder(event_class: type, transcoder: JSONTranscoder) -> Any:
    """The generated encoder of ``event_class``'s ``__dict__`` (bytes, or _Unusual), or None
    when the class cannot have one (not a dataclass, a class_version, other transcodings)."""
    if not dataclasses.is_dataclass(event_class) or getattr(event_class, "class_version", 1) != 1:
        return None
    for kind, transcoding_class in _INLINE.items():
        if type(transcoder.types.get(kind)) is not transcoding_class:
            return None
    fields = [(f.name, _kind(f.type)) for f in dataclasses.fields(event_class)]
    if [name for name, _ in fields[:2]] != ["originator_id", "originator_version"]:
        return None
    names = [name for name, _ in fields]
    lines = [f"def encode(state, KEYS={tuple(names)!r}):",
             "    if tuple(state) != KEYS:",
             "        raise Unusual",
             f"    {', '.join(f'v{i}' for i in range(len(names)))}, = state.values()"]
    items, plain, trees = [], [], []
    for index, (name, field_kind) in enumerate(fields[2:], start=2):
        v = f"v{index}"
        items.append(f"{name!r}: {v}")
        if field_kind in _TRANSCODED:
            name_, data = _TRANSCODED[field_kind]
            lines += [f"    if type({v}) is {field_kind}:",
                      f"        {v} = {{'_type_': '{name_}', '_data_': {data.format(v=v)}}}",
                      f"    elif {v} is not None:", "        raise Unusual"]
        elif field_kind == "plain":
            plain.append(v)
        else:
            trees.append((v, field_kind))
    if plain:  # (set.issuperset over map(type, ...) took more instructions than this)
        lines += ["    if " + " or ".join(f"type({v}) not in PLAIN" for v in plain) + ":", "        raise Unusual"]
    for v, field_kind in trees:
        shape = _TREE_CHECKS.get(field_kind)
        if shape is not None:
            lines += [line.format(v=v) for line in shape]
            lines.append(f"    elif type({v}) not in PLAIN and not plain_tree({v}):")
        else:
            lines.append(f"    if type({v}) not in PLAIN and not plain_tree({v}):")
        lines.append("        raise Unusual")
    lines.append(f"    return dumps({{{', '.join(items)}}}, None, STRICT)")
    namespace: dict[str, Any] = {"Unusual": _Unusual, "UUID": UUID, "Decimal": Decimal, "datetime": datetime,
                                 "UTC": UTC, "PLAIN": _PLAIN, "plain_tree": plain_tree, "dumps": orjson.dumps,
                                 "STRICT": _STRICT}
    exec(compile("\n".join(lines), f"<encoder of {event_class.__qualname__}>", "exec"), namespace)  # noqa: S102
    return namespace["encode"]


_NO_ENCODER = object()


class ClassEncodingMapper(Mapper[UUID]):
    """eventsourcing's Mapper, encoding each event with its class's generated encoder when it
    has one and the event is one it was made for; otherwise exactly as the Mapper does."""

    def __init__(self, transcoder: Any, compressor: Any = None, cipher: Any = None) -> None:
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        self._encoders: dict[type, Any] = {}
        self._building = threading.Lock()

    def _encoder_of(self, event_class: type) -> Any:
        with self._building:  # built once per class, whichever thread asks first
            found = self._encoders.get(event_class)
            if found is None:
                encoder = build_encoder(event_class, self.transcoder)  # type: ignore[arg-type]
                found = _NO_ENCODER if encoder is None else (encoder, get_topic(event_class))
                self._encoders[event_class] = found
            return found

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """The StoredEvent Mapper.to_stored_event makes of ``domain_event``, byte for byte."""
        event_class = type(domain_event)
        found = self._encoders.get(event_class) or self._encoder_of(event_class)
        if found is not _NO_ENCODER:
            encoder, topic = found
            state = domain_event.__dict__
            try:
                stored_state = encoder(state)
            except (_Unusual, orjson.JSONEncodeError):
                return super().to_stored_event(domain_event)
            if self.compressor:
                stored_state = self.compressor.compress(stored_state)
            if self.cipher:
                stored_state = self.cipher.encrypt(stored_state)
            # StoredEvent's own __init__ (a frozen dataclass's: a Python call per field) skipped.
            stored = object.__new__(StoredEvent)
            object.__setattr__(stored, "__dict__", {
                "originator_id": state["originator_id"], "originator_version": state["originator_version"],
                "topic": topic, "state": stored_state})
            return stored
        return super().to_stored_event(domain_event)


def with_class_encoders(mapper: Mapper[Any]) -> Mapper[Any]:
    """What an application's ``construct_mapper`` returns: ``mapper`` replaced by a
    ClassEncodingMapper (same transcoder, compressor and cipher) when it is eventsourcing's
    Mapper with the ledger's JSON transcoder, left alone when configured otherwise."""
    if type(mapper) is not Mapper or type(mapper.transcoder) not in (FastJSONTranscoder, JSONTranscoder):
        return mapper
    return ClassEncodingMapper(mapper.transcoder, compressor=mapper.compressor, cipher=mapper.cipher)
