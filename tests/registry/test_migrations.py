"""The packaged Alembic migrations build exactly the schema the ORM models describe, on SQLite
and on PostgreSQL (``registry_kind``, tests/registry/conftest.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from shopfloor.registry import Registry
from shopfloor.registry.models import Base
from shopfloor.registry.service import VERSION_TABLE, alembic_config
from tests.registry.conftest import registry_url


def _fresh(tmp_path: Path, kind: str = "sqlite") -> Registry:
    return Registry(registry_url(kind, tmp_path))


def _current(reg: Registry) -> str | None:
    with reg.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def test_upgrade_on_an_empty_database(tmp_path: Path, registry_kind: str) -> None:
    reg = _fresh(tmp_path, registry_kind)
    try:
        reg.upgrade()
        tables = set(inspect(reg.engine).get_table_names())
        assert set(Base.metadata.tables) | {VERSION_TABLE} == tables
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert _current(reg) == head
        reg.upgrade()  # a second run is a no-op
        assert _current(reg) == head
    finally:
        reg.close()


def test_models_match_the_migrated_schema(tmp_path: Path, registry_kind: str) -> None:
    reg = _fresh(tmp_path, registry_kind)
    try:
        reg.upgrade()
        with reg.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={"version_table": VERSION_TABLE, "compare_type": True},
            )
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        reg.close()


def test_downgrade_to_base_and_back(tmp_path: Path, registry_kind: str) -> None:
    reg = _fresh(tmp_path, registry_kind)
    try:
        reg.upgrade()
        with reg.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert set(inspect(reg.engine).get_table_names()) == {VERSION_TABLE}
        reg.upgrade()
        tenant, key = reg.create_tenant("after-roundtrip")
        assert reg.tenant_by_api_key(key) == tenant
    finally:
        reg.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    reg = _fresh(tmp_path)
    try:
        with reg.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        reg.close()


def test_concurrent_upgrades_on_postgresql(tmp_path: Path) -> None:
    """Workers starting at once on a new database: one migrates, the others wait for it (the
    registry's write lock) and find the schema at head. Without the lock they hung here."""
    url = registry_url("postgres", tmp_path)
    regs = [Registry(url) for _ in range(3)]
    errors: list[BaseException] = []

    def upgrade(reg: Registry) -> None:
        try:
            reg.upgrade()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(r,), daemon=True) for r in regs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "an upgrade hangs"
        assert errors == []
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert all(_current(r) == head for r in regs)
    finally:
        for r in regs:
            r.close()
