"""What a read model is to the projector: tables, and a per-batch applier of events."""

from __future__ import annotations

from decimal import Decimal
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

    def flush(self) -> None:
        """Write accumulated changes (models that write immediately need nothing here)."""


class ReadModel:
    """A named group of tables maintained from the ledger's events."""

    name: str = ""
    tables: tuple[Table, ...] = ()
    batch_class: type[ModelBatch] = ModelBatch

    def batch(self, conn: Connection) -> ModelBatch:
        return self.batch_class(conn)
