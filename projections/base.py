"""What a read model is to the projector: tables, and a per-batch applier of events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Table


def dec(text: str | None) -> Decimal:
    return Decimal(text) if text else Decimal(0)


def fmt(amount: Decimal) -> str:
    """Decimal as plain text without exponent or trailing zeros ("0.000375", "12.5")."""
    return format(amount.normalize(), "f") if amount else "0"


class ModelBatch:
    """Applies one batch of events to one read model inside the projector's transaction.

    Handlers are methods named ``on_<Aggregate>_<Event>``; events without a handler are
    ignored. ``flush`` writes whatever was accumulated in memory.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def apply(self, position: int, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(position, event)

    def prepare(self, events: list[Any]) -> None:
        """Called with the whole batch's events before any is applied: load in a few
        queries what the handlers will need (rather than one query per event)."""

    def flush(self) -> None:
        """Write accumulated changes (models that write immediately need nothing here)."""


class ReadModel:
    """A named group of tables maintained from the ledger's events."""

    name: str = ""
    tables: tuple[Table, ...] = ()
    batch_class: type[ModelBatch] = ModelBatch

    def batch(self, conn: Connection) -> ModelBatch:
        return self.batch_class(conn)


def chunks(values: Iterable[Any], size: int = 500) -> Iterator[list[Any]]:
    """Bounded IN lists (SQLite allows 32k parameters, PostgreSQL 65k; keep queries small)."""
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk
