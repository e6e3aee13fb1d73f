"""The distributed bench's bytes at rest count the run's Kafka topic files, and say they are
unknown (not PostgreSQL's bytes alone) when the topics are not under this checkout's broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import distributed


def test_topic_files_counted_or_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "KAFKA_DATA", tmp_path)
    assert distributed._kafka_bytes("run7") is None  # another broker's topics: unknown
    partition = tmp_path / "run7.accounting-0"
    partition.mkdir()
    (partition / "00000000000000000000.log").write_bytes(b"x" * 10_000)
    (tmp_path / "run8.accounting-0").mkdir()  # another run's topic: not counted
    (tmp_path / "run8.accounting-0" / "00000000000000000000.log").write_bytes(b"y" * 50_000)
    counted = distributed._kafka_bytes("run7")
    assert counted is not None and 10_000 <= counted < 50_000
