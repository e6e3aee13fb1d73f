"""What a read model is to the projector: tables, and a per-batch applier of events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Executable, Table


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
    """A named group of tables maintained from the ledger's events.

    A model may keep rows in memory between batches (what it last wrote, so the next batch
    need not read them back); the projector calls ``forget`` whenever the stored tables may
    differ from what this instance wrote last (another writer, a reset, a failed batch)."""

    name: str = ""
    tables: tuple[Table, ...] = ()
    batch_class: type[ModelBatch] = ModelBatch

    def batch(self, conn: Connection) -> ModelBatch:
        return self.batch_class(conn)

    def forget(self) -> None:
        """Drop every row kept in memory between batches (models that keep none: nothing)."""


def chunks(values: Iterable[Any], size: int = 500) -> Iterator[list[Any]]:
    """Bounded IN lists (SQLite allows 32k parameters, PostgreSQL 65k; keep queries small)."""
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


_COMPILED: dict[tuple[Executable, str], str] = {}


def execute_many(conn: Connection, statement: Executable, rows: list[dict[str, Any]]) -> None:
    """``conn.execute(statement, rows)`` without SQLAlchemy's work per row: the statement is
    compiled once per dialect with named parameters and run by the driver's ``executemany``
    in the connection's transaction (SQLAlchemy's per-row parameter processing was a fifth of
    live projection). Values must be what the driver takes as they are (text, int, None), and
    ``statement`` a module-level constant (compiled statements are kept by it)."""
    if not rows:
        return
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(_compiled(conn, statement), rows)
    finally:
        cursor.close()


def execute_rows(conn: Connection, statement: Executable, names: tuple[str, ...],
                 rows: list[tuple[Any, ...]]) -> None:
    """``execute_many`` with each row a tuple of the values of ``names``, the statement's
    parameters in the order its SQL has them (checked when it is first compiled): the driver
    binds them by position, with no dict to build per row nor a lookup per parameter (binding
    by name was a third of the driver's time on the hot writes). Same rules as ``execute_many``."""
    if not rows:
        return
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(_positional(conn, statement, names), rows)
    finally:
        cursor.close()


def fetch_raw(conn: Connection, statement: Executable, values: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``conn.execute(statement, values)`` by the driver, as ``execute_many`` does (SQLAlchemy's
    work around each of a batch's few fixed statements was a tenth of a small batch): the
    rows as tuples (none for a statement that returns none). Same rules as ``execute_many``."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(_compiled(conn, statement), values)
        return list(cursor.fetchall()) if cursor.description is not None else []
    finally:
        cursor.close()


_IN_QUERIES: dict[tuple[str, str, tuple[str, ...], str, int], str] = {}


def fetch_in(conn: Connection, table: Table, columns: tuple[str, ...], key: str,
             values: list[Any]) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table WHERE key IN values`` by the driver, in the connection's
    transaction (SQLAlchemy's expanding ``IN`` was rendered anew on every execution): the
    rows as tuples of ``columns``. ``values`` as ``chunks`` bounds them."""
    if not values:
        return []
    dialect = conn.dialect.name
    postgres = dialect == "postgresql"
    shape = (dialect, table.name, columns, key, 0 if postgres else len(values))
    sql = _IN_QUERIES.get(shape)
    if sql is None:
        # The table's and columns' names are the product's own identifiers (no quoting needed).
        where = f"{key} = ANY(%s)" if postgres else f"{key} IN ({','.join('?' * len(values))})"
        sql = _IN_QUERIES[shape] = f"SELECT {', '.join(columns)} FROM {table.name} WHERE {where}"
        if len(_IN_QUERIES) > 4096:  # one per list length on SQLite: bounded all the same
            _IN_QUERIES.clear()
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, (list(values),) if postgres else list(values))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _compiled(conn: Connection, statement: Executable) -> str:
    """``statement``'s SQL for ``conn``'s dialect with named parameters, compiled once."""
    dialect: Any = conn.dialect
    sql = _COMPILED.get((statement, dialect.name))
    if sql is None:
        if dialect.paramstyle not in ("named", "pyformat"):  # qmark (pysqlite): the named style instead
            dialect = type(dialect)(paramstyle="named")
        compile_for: Any = statement
        sql = _COMPILED[(statement, dialect.name)] = str(compile_for.compile(dialect=dialect))
    return sql


_POSITIONAL: dict[tuple[Executable, str], str] = {}


def _positional(conn: Connection, statement: Executable, names: tuple[str, ...]) -> str:
    """``statement``'s SQL for ``conn``'s dialect with positional parameters (``?`` on SQLite,
    ``%s`` otherwise), compiled once; a ValueError when its parameters are not ``names`` in
    that order (a row's values would land in the wrong columns)."""
    dialect: Any = conn.dialect
    sql = _POSITIONAL.get((statement, dialect.name))
    if sql is None:
        style = "qmark" if dialect.name == "sqlite" else "format"
        compile_for: Any = statement
        compiled = compile_for.compile(dialect=type(dialect)(paramstyle=style))
        if tuple(compiled.positiontup) != names:
            raise ValueError(f"the statement's parameters are {compiled.positiontup}, not {names}")
        sql = _POSITIONAL[(statement, dialect.name)] = str(compiled)
    return sql
