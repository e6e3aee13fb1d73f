"""The running product for the end-to-end tests: `wispgate serve` on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .product import Product


@pytest.fixture
def product(tmp_path: Path) -> Iterator[Product]:
    running = Product(data_dir=tmp_path / "var")
    running.start()
    yield running
    running.stop()
