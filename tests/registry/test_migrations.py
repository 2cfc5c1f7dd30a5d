"""The packaged Alembic migrations build exactly the schema the ORM models describe."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from shopfloor.registry import Registry
from shopfloor.registry.models import Base
from shopfloor.registry.service import VERSION_TABLE, alembic_config


def _fresh(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'fresh.db'}")


def _current(reg: Registry) -> str | None:
    with reg.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def test_upgrade_on_an_empty_database(tmp_path: Path) -> None:
    reg = _fresh(tmp_path)
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


def test_models_match_the_migrated_schema(tmp_path: Path) -> None:
    reg = _fresh(tmp_path)
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


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    reg = _fresh(tmp_path)
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
