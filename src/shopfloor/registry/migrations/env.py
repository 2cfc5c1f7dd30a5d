"""Alembic environment of the registry, driven from ``Registry.upgrade()`` (no alembic.ini).

The caller passes an open connection in ``config.attributes["connection"]``; without one the
``sqlalchemy.url`` main option is used, so the alembic CLI works too
(``alembic -x ... -c <ini with script_location = shopfloor.registry:migrations>``).
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine

from shopfloor.registry.models import Base

config = context.config
target_metadata = Base.metadata
VERSION_TABLE = config.get_main_option("version_table") or "registry_alembic_version"


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    # The registry database may hold other components' tables; autogenerate must not drop them.
    return type_ != "table" or name in target_metadata.tables


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported for the registry")
main()
