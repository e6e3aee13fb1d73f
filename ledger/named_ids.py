"""Ids derived from names (UUID version 5 in the project's namespace), made without the
checks of ``uuid.UUID.__init__``.

A billing run derives several ids per account (its invoices for the period and the two
before, its BillingPeriods): with ``uuid.uuid5`` most of that time was ``UUID.__init__``'s
argument checks, not the SHA-1. ``named_id`` returns the very same UUID as
``uuid5(NAMESPACE, name)`` (``tests/test_named_ids.py`` compares them on random names).
"""

from __future__ import annotations

from hashlib import sha1
from uuid import UUID, SafeUUID

from domain.ids import NAMESPACE

_NAMESPACE = NAMESPACE.bytes
# What UUID(bytes=..., version=5) does to the hash's first 16 bytes: the RFC 4122 variant
# bits and the version number.
_CLEAR = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_SET = (0x8000 << 48) | (5 << 76)
_new = object.__new__
_set = object.__setattr__


def named_id(name: str) -> UUID:
    """``uuid.uuid5(domain.ids.NAMESPACE, name)``."""
    value = int.from_bytes(sha1(_NAMESPACE + name.encode()).digest()[:16], "big") & _CLEAR | _SET
    made: UUID = _new(UUID)
    _set(made, "int", value)
    _set(made, "is_safe", SafeUUID.unknown)
    return made


__all__ = ["named_id"]
