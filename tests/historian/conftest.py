"""The historian contract suite runs against every backend listed in ``BACKENDS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shopfloor.historian.backend import HistorianBackend
from shopfloor.historian.duckdb_backend import DuckDBHistorian
from tests.historian import postgres_service
from tests.services import require

Factory = Callable[[], HistorianBackend]


def _duckdb(tmp: Path) -> Factory:
    return lambda: DuckDBHistorian(tmp / "hist", commit_interval_ms=2, background=False)


def _postgres(tmp: Path) -> Factory:
    """One cluster for the session, a fresh schema per test."""
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    from shopfloor.historian.postgres_backend import PostgresHistorian

    url = postgres_service.shared_cluster().new_schema()
    return lambda: PostgresHistorian(url, commit_interval_ms=2, background=False)


BACKENDS: dict[str, Callable[[Path], Factory]] = {"duckdb": _duckdb, "postgres": _postgres}


@pytest.fixture(params=sorted(BACKENDS))
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory that (re)opens the same store; every store it opened is closed at the end."""
    opened: list[HistorianBackend] = []
    make = BACKENDS[request.param](tmp_path)

    def factory() -> HistorianBackend:
        h = make()
        opened.append(h)
        return h

    yield factory
    for h in opened:
        h.close()


@pytest.fixture
def backend(open_backend: Factory) -> HistorianBackend:
    return open_backend()


@pytest.fixture
def url() -> str:
    """A fresh schema in the session's throwaway PostgreSQL cluster."""
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    return postgres_service.shared_cluster().new_schema("pgh")


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """The historians a test opened (postgres_service.open_historian), closed at its end."""
    stores: list[Any] = []
    yield stores
    for h in stores:
        h.close()
