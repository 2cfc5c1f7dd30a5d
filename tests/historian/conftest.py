"""The historian contract suite runs against every backend listed in ``BACKENDS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shopfloor.historian.duckdb_backend import DuckDBHistorian

Factory = Callable[[], DuckDBHistorian]


def _duckdb(tmp: Path) -> Factory:
    return lambda: DuckDBHistorian(tmp / "hist", commit_interval_ms=2, background=False)


BACKENDS: dict[str, Callable[[Path], Factory]] = {"duckdb": _duckdb}


@pytest.fixture(params=sorted(BACKENDS))
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory that (re)opens the same store; every store it opened is closed at the end."""
    opened: list[DuckDBHistorian] = []
    make = BACKENDS[request.param](tmp_path)

    def factory() -> DuckDBHistorian:
        h = make()
        opened.append(h)
        return h

    yield factory
    for h in opened:
        h.close()


@pytest.fixture
def backend(open_backend: Factory) -> DuckDBHistorian:
    return open_backend()
