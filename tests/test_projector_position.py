"""Each projector reads its own stored position (the statement is built once per projector,
for its name), on SQLite and PostgreSQL alike."""

from __future__ import annotations

from sqlalchemy import insert

from api.bootstrap import Runtime
from projections import ReadModelProjector
from projections import tables as t


def test_each_projector_reads_the_position_stored_under_its_own_name(runtime: Runtime) -> None:
    engine = runtime.engine
    first = ReadModelProjector(engine, runtime.ledger.mapper, name="first")
    second = ReadModelProjector(engine, runtime.ledger.mapper, name="second")
    assert (first.position(), second.position()) == (0, 0)  # none stored yet
    with engine.begin() as conn:
        conn.execute(insert(t.positions), [{"name": "first", "position": 17}, {"name": "second", "position": 5}])
    assert (first.position(), second.position()) == (17, 5)
    with engine.begin() as conn:
        conn.execute(t.positions.update().where(t.positions.c.name == "second").values(position=9))
    assert (first.position(), second.position()) == (17, 9)  # read afresh each time
