"""Fixtures for the registry tests: a migrated registry and an API client.

``registry`` runs every test on both databases the registry supports: SQLite in tmp_path
(the embedded default) and PostgreSQL (a fresh schema per test in the session's throwaway
cluster, tests/historian/postgres_service.py). The route tests use the same fixture, so they
run on both too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, Table
from sqlalchemy.exc import SQLAlchemyError

from shopfloor.api import errors
from shopfloor.api.registry_routes import router
from shopfloor.core.config import Settings
from shopfloor.registry import Registry, TenantInfo
from shopfloor.registry.service import VERSION_TABLE, make_engine
from shopfloor.security.audit import AuditLog
from shopfloor.security.auth import AuthService
from tests.historian import postgres_service
from tests.services import require

ADMIN_KEY = "admin-key-for-tests"


def registry_url(kind: str, tmp_path: Path) -> str:
    """A fresh, empty registry database of ``kind`` (sqlite or postgres)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    # A schema, not a database: Alembic and the registry follow search_path, and a schema is
    # created at once where CREATE DATABASE copies a template and checkpoints (~0.4 s each).
    return postgres_service.shared_cluster().new_schema("reg")


class _PostgresSchemas:
    """Migrated PostgreSQL schemas, emptied after each test and handed to the next.

    Building one costs ~0.5-2 s here (PostgreSQL creates ~30 tables with their indexes;
    Alembic itself is a small part); emptying one costs ~20 ms. test_migrations.py runs the real
    upgrade on a fresh schema on its own.
    """

    def __init__(self) -> None:
        self.free: list[str] = []
        self.seeds: dict[str, list[dict[str, Any]]] = {}  # rows the migrations insert
        self.tables: list[str] = []

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        url = postgres_service.shared_cluster().new_schema("reg")
        reg = Registry(url)
        try:
            reg.upgrade()
            if not self.tables:
                meta = MetaData()
                meta.reflect(reg.engine)
                self.tables = [t for t in meta.tables if t != VERSION_TABLE]
                with reg.engine.connect() as conn:
                    for name in self.tables:
                        rows = conn.execute(meta.tables[name].select()).mappings().all()
                        if rows:
                            self.seeds[name] = [dict(r) for r in rows]
        finally:
            reg.close()
        return url

    def give_back(self, url: str) -> None:
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                # Superuser in the throwaway cluster: replica mode skips the foreign-key
                # triggers, so the tables empty in any order. A test that left a transaction
                # open would block this; the schema is then dropped from the pool.
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                for name in self.tables:
                    conn.exec_driver_sql(f'DELETE FROM "{name}"')
                conn.exec_driver_sql(
                    "SELECT setval(c.oid, 1, false) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'S' AND n.nspname = current_schema()"
                )
                for name, rows in self.seeds.items():
                    conn.execute(Table(name, MetaData(), autoload_with=conn).insert(), rows)
        except SQLAlchemyError:
            return
        finally:
            engine.dispose()
        self.free.append(url)


_SCHEMAS = _PostgresSchemas()


@pytest.fixture(params=["sqlite", "postgres"])
def registry_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def registry(registry_kind: str, tmp_path: Path) -> Iterator[Registry]:
    if registry_kind == "sqlite":
        reg = Registry(registry_url(registry_kind, tmp_path))
        reg.upgrade()
        yield reg
        reg.close()
        return
    registry_url(registry_kind, tmp_path)  # skips or fails without PostgreSQL
    url = _SCHEMAS.take()
    reg = Registry(url)
    yield reg
    reg.close()
    _SCHEMAS.give_back(url)


@pytest.fixture
def tenant(registry: Registry) -> TenantInfo:
    return registry.create_tenant("acme")[0]


@dataclass
class _Platform:
    """The attributes of the real Platform that the registry routes use."""

    registry: Registry
    admin_key: str
    auth: AuthService


@pytest.fixture
def app(registry: Registry, tmp_path: Path) -> FastAPI:
    """Just the registry router, with the platform's error handlers."""
    app = FastAPI()
    app.include_router(router)
    errors.install(app)
    settings = Settings(data_dir=tmp_path)
    auth = AuthService(registry, settings, AuditLog(registry, settings))
    app.state.platform = _Platform(registry, ADMIN_KEY, auth)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
