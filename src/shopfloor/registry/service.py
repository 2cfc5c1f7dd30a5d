"""The registry service: tenants, the ISA-95 hierarchy, device types, devices and signals.

Only plain frozen dataclasses leave this module; ORM objects stay inside one session.
Every public method opens its own session, so one ``Registry`` serves many threads.

Two lookups run on every request and are cached in memory:
``tenant_by_api_key`` (every API call) and ``resolve`` (every ingest batch).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from shopfloor.core.errors import BadInput, Conflict, NotFound
from shopfloor.core.types import Classification, DataType
from shopfloor.registry.models import (
    LEVELS,
    NAME_LEN,
    UNIT_LEN,
    Asset,
    AssetLevel,
    Device,
    DeviceType,
    DeviceTypeSignal,
    Signal,
    Tenant,
)

MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
# Alembic's version table; named for the registry so other components can keep their own
# migration history in the same database.
VERSION_TABLE: Final = "registry_alembic_version"

# Another process (a CLI, a second API worker) may rotate a key; this bounds how long a
# cached key stays valid here after that.
API_KEY_CACHE_TTL_S: Final = 60.0

_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IMMEDIATE: Final = "shopfloor_begin_immediate"
_RETRIES: Final = 3

# ---------------------------------------------------------------------------------------------
# Plain data handed to callers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantInfo:
    id: int
    name: str
    auto_register_signals: bool
    retention_days: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AssetInfo:
    id: int
    tenant_id: int
    level: AssetLevel
    name: str
    parent_id: int | None


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """A signal as declared by a device type or a caller, before it has an id."""

    name: str
    data_type: DataType = DataType.FLOAT
    unit: str = ""
    description: str = ""
    classification: Classification = Classification.GENERAL

    def __post_init__(self) -> None:
        check_name(self.name, "signal")
        # Accept the plain strings JSON and YAML give us, but store the enums.
        object.__setattr__(self, "data_type", _enum(DataType, self.data_type, "data_type"))
        object.__setattr__(
            self, "classification", _enum(Classification, self.classification, "classification")
        )
        if len(self.unit) > UNIT_LEN:
            raise BadInput(f"unit longer than {UNIT_LEN} characters", "unit")


@dataclass(frozen=True, slots=True)
class DeviceTypeInfo:
    id: int
    tenant_id: int
    name: str
    extends: str | None
    description: str
    # Effective signals: inherited ones first, own ones overriding same-named inherited ones.
    signals: tuple[SignalSpec, ...]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: int
    tenant_id: int
    name: str
    device_type: str | None
    asset_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SignalInfo:
    id: int
    tenant_id: int
    device: str
    name: str
    data_type: DataType
    unit: str
    description: str
    classification: Classification
    created_at: datetime

    @property
    def key(self) -> str:
        """The name users see and queries use: ``<device>/<signal>``."""
        return f"{self.device}/{self.name}"


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def check_name(name: object, what: str) -> str:
    """A tenant, asset, device, type or signal name: 1-200 characters, no '/', no controls.

    '/' is excluded because ``<device>/<signal>`` must split unambiguously.
    """
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_LEN:
        raise BadInput(f"{what} name must be 1-{NAME_LEN} characters: {name!r}", what)
    if "/" in name:
        raise BadInput(f"{what} name must not contain '/': {name!r}", what)
    if _CONTROL_CHARS.search(name):
        raise BadInput(f"{what} name must not contain control characters: {name!r}", what)
    return name


_E = TypeVar("_E", DataType, Classification, AssetLevel)


def _enum(kind: type[_E], value: object, what: str) -> _E:
    try:
        return kind(value)  # type: ignore[arg-type]  # any value; the enum rejects bad ones
    except ValueError:
        allowed = "|".join(kind)
        raise BadInput(f"{what} must be one of {allowed}: {value!r}", what) from None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str]:
    """``"press-1/temp"`` -> ``("press-1", "temp")``."""
    device, sep, name = key.partition("/")
    if not sep or not device or not name:
        raise BadInput(f"signal key must look like '<device>/<signal>': {key!r}", "signal")
    return device, name


# ---------------------------------------------------------------------------------------------
# Engine set-up
# ---------------------------------------------------------------------------------------------


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off; _sqlite_on_begin emits ours.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Write transactions take the write lock up front: a deferred transaction that reads and
    # then writes fails at once (SQLITE_BUSY, no waiting) when another writer got in between.
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# Several processes (API workers, ingest workers, the CLI) share one PostgreSQL registry; each
# keeps a few connections (PostgreSQL allows 100 by default) and checks them before use, since
# a database restart or an idle timeout would otherwise fail the first query after it.
PG_POOL_SIZE: Final = 5
PG_MAX_OVERFLOW: Final = 5
PG_POOL_RECYCLE_S: Final = 1800


def registry_url(url: str) -> URL:
    """The SQLAlchemy URL of ``url``: plain ``postgresql://``/``postgres://`` (as historian_url
    takes them) mean the psycopg 3 driver, which Shopfloor installs (SQLAlchemy would pick
    psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        url = f"postgresql+psycopg://{rest}"
    try:
        return make_url(url)
    except ArgumentError:
        raise BadInput(
            f"registry URL {url!r} is not a database URL; use sqlite:///<file> or "
            "postgresql://user@host/database",
            "registry_url",
        ) from None


# Key of the registry's write lock on PostgreSQL (pg_advisory_xact_lock's two-int form, the
# second int the schema's hash, so registries in other schemas of one database do not wait on
# each other).
PG_WRITE_LOCK: Final = 0x5F5E_0001


def _postgres_on_begin(conn: Any) -> None:
    # SQLite's BEGIN IMMEDIATE makes write transactions take turns across processes, and code
    # written against it reads, then writes what it read (the audit chain's last hash, counters,
    # generations). Under PostgreSQL's READ COMMITTED two such transactions would interleave and
    # one update be lost or the chain fork; one transaction-scoped lock keeps the same order.
    # Reads take no lock, as on SQLite.
    if conn.get_execution_options().get(_IMMEDIATE, False):
        conn.exec_driver_sql(
            f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK}, hashtext(current_schema()))"
        )


def make_engine(url: str) -> Engine:
    u = registry_url(url)
    if u.get_backend_name() != "sqlite":
        engine = create_engine(
            u,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_recycle=PG_POOL_RECYCLE_S,
        )
        if u.get_backend_name() == "postgresql":
            event.listen(engine, "begin", _postgres_on_begin)
        return engine
    memory = u.database in (None, "", ":memory:")
    if not memory and u.database:
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        u,
        connect_args={"check_same_thread": False, "timeout": 30},
        # An in-memory database exists once per connection, so all threads share one.
        poolclass=StaticPool if memory else None,
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------


@dataclass
class _KeyCacheEntry:
    tenant: TenantInfo
    expires: float


@dataclass
class _Caches:
    """In-memory lookups; reads take no lock (dict get is atomic), writes hold ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    api_keys: dict[str, _KeyCacheEntry] = field(default_factory=dict)
    # (tenant_id, device name) -> {signal name -> signal id}
    signal_ids: dict[tuple[int, str], dict[str, int]] = field(default_factory=dict)
    # signal id -> data type
    types: dict[int, DataType] = field(default_factory=dict)


class Registry:
    """Tenants, hierarchy, device types, devices and signals in one SQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._cache = _Caches()
        # Bumped whenever a resolved id may no longer be valid (a device was deleted).
        self.generation = 0
        # Serialises the miss path of resolve() in this process, so threads that miss on the
        # same new names wait for the first one and then find its signals in the cache.
        self._resolve_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (``alembic upgrade head``)."""
        from alembic import command

        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several processes starting at once on a new or older schema: the first
                # migrates (DDL is transactional here), the others wait and find it at head.
                _postgres_on_begin(conn.execution_options(**{_IMMEDIATE: True}))
            command.upgrade(alembic_config(conn), "head")

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as s:
            yield s

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            s.connection(execution_options={_IMMEDIATE: True})
            yield s

    # -- tenants -----------------------------------------------------------------------------

    def create_tenant(
        self, name: str, auto_register_signals: bool = True, retention_days: int | None = None
    ) -> tuple[TenantInfo, str]:
        """Create a tenant; returns it and its API key, which is shown this once only."""
        check_name(name, "tenant")
        _check_retention(retention_days)
        key = secrets.token_urlsafe(32)
        row = Tenant(
            name=name,
            api_key_hash=hash_api_key(key),
            auto_register_signals=auto_register_signals,
            retention_days=retention_days,
        )
        try:
            with self._write() as s:
                s.add(row)
        except IntegrityError:
            raise Conflict(f"tenant {name!r} exists already") from None
        return _tenant_info(row), key

    def tenant_by_api_key(self, key: str) -> TenantInfo | None:
        """The tenant owning ``key``, or None. Cached: this runs on every API request."""
        digest = hash_api_key(key)
        now = time.monotonic()
        hit = self._cache.api_keys.get(digest)
        if hit is not None and hit.expires > now:
            return hit.tenant
        with self._read() as s:
            row = s.scalar(select(Tenant).where(Tenant.api_key_hash == digest))
            if row is None:
                return None
            tenant = _tenant_info(row)
        with self._cache.lock:
            self._cache.api_keys[digest] = _KeyCacheEntry(tenant, now + API_KEY_CACHE_TTL_S)
        return tenant

    def get_tenant(self, id_or_name: int | str) -> TenantInfo:
        with self._read() as s:
            return _tenant_info(_tenant_row(s, id_or_name))

    def list_tenants(self) -> list[TenantInfo]:
        with self._read() as s:
            return [_tenant_info(t) for t in s.scalars(select(Tenant).order_by(Tenant.id))]

    def update_tenant(
        self,
        tenant_id: int,
        *,
        auto_register_signals: bool | None = None,
        retention_days: int | None = None,
    ) -> TenantInfo:
        """Change tenant settings; None leaves a setting as it is, retention_days=0 clears it."""
        _check_retention(retention_days, allow_zero=True)
        with self._write() as s:
            row = _tenant_row(s, tenant_id)
            if auto_register_signals is not None:
                row.auto_register_signals = auto_register_signals
            if retention_days is not None:
                row.retention_days = retention_days or None
            info = _tenant_info(row)
        self._forget_tenant_keys(tenant_id)
        return info

    def rotate_api_key(self, tenant_id: int) -> str:
        """Give the tenant a new API key; the old one stops working at once in this process."""
        key = secrets.token_urlsafe(32)
        with self._write() as s:
            _tenant_row(s, tenant_id).api_key_hash = hash_api_key(key)
        self._forget_tenant_keys(tenant_id)
        return key

    def _forget_tenant_keys(self, tenant_id: int) -> None:
        with self._cache.lock:
            stale = [h for h, e in self._cache.api_keys.items() if e.tenant.id == tenant_id]
            for digest in stale:
                del self._cache.api_keys[digest]

    # -- hierarchy ---------------------------------------------------------------------------

    def create_asset(
        self, tenant_id: int, level: AssetLevel | str, name: str, parent_id: int | None = None
    ) -> AssetInfo:
        """Add an asset; its level must be the ISA-95 level right below its parent's."""
        lvl = _enum(AssetLevel, level, "level")
        check_name(name, "asset")
        with self._write() as s:
            _tenant_row(s, tenant_id)
            _check_parent(s, tenant_id, lvl, parent_id)
            row = Asset(tenant_id=tenant_id, level=lvl.value, name=name, parent_id=parent_id)
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"asset {name!r} exists already under this parent") from None
            return _asset_info(row)

    def get_asset(self, tenant_id: int, asset_id: int) -> AssetInfo:
        with self._read() as s:
            return _asset_info(_asset_row(s, tenant_id, asset_id))

    def list_assets(self, tenant_id: int) -> list[AssetInfo]:
        with self._read() as s:
            q = select(Asset).where(Asset.tenant_id == tenant_id).order_by(Asset.id)
            return [_asset_info(a) for a in s.scalars(q)]

    def delete_asset(self, tenant_id: int, asset_id: int) -> None:
        """Delete an asset that has neither child assets nor devices."""
        with self._write() as s:
            row = _asset_row(s, tenant_id, asset_id)
            children = s.scalar(
                select(func.count()).select_from(Asset).where(Asset.parent_id == asset_id)
            )
            devices = s.scalar(
                select(func.count()).select_from(Device).where(Device.asset_id == asset_id)
            )
            if children or devices:
                raise Conflict(
                    f"asset {row.name!r} has {children} child assets and {devices} devices;"
                    " move or delete them first"
                )
            s.delete(row)

    def asset_subtree(self, tenant_id: int, roots: Iterable[int]) -> frozenset[int]:
        """The given assets of the tenant and every asset below them (others' ids ignored)."""
        with self._read() as s:
            rows = s.execute(
                select(Asset.id, Asset.parent_id).where(Asset.tenant_id == tenant_id)
            ).all()
        children: dict[int, list[int]] = {}
        for asset_id, parent in rows:
            if parent is not None:
                children.setdefault(parent, []).append(asset_id)
        known = {asset_id for asset_id, _ in rows}
        out: set[int] = set()
        todo = [r for r in roots if r in known]
        while todo:
            node = todo.pop()
            if node not in out:
                out.add(node)
                todo.extend(children.get(node, ()))
        return frozenset(out)

    def tree(self, tenant_id: int) -> list[dict[str, Any]]:
        """The hierarchy as nested dicts, devices listed under their asset."""
        with self._read() as s:
            assets = s.scalars(
                select(Asset).where(Asset.tenant_id == tenant_id).order_by(Asset.id)
            ).all()
            devices = s.execute(
                select(Device.asset_id, Device.name)
                .where(Device.tenant_id == tenant_id, Device.asset_id.is_not(None))
                .order_by(Device.name)
            ).all()
        nodes: dict[int, dict[str, Any]] = {
            a.id: {"id": a.id, "level": a.level, "name": a.name, "children": [], "devices": []}
            for a in assets
        }
        for asset_id, device in devices:
            if asset_id is not None:  # filtered in SQL; this tells the type checker
                nodes[asset_id]["devices"].append(device)
        roots: list[dict[str, Any]] = []
        for a in assets:
            siblings = roots if a.parent_id is None else nodes[a.parent_id]["children"]
            siblings.append(nodes[a.id])
        return roots

    # -- device types ------------------------------------------------------------------------

    def create_device_type(
        self,
        tenant_id: int,
        name: str,
        signals: Sequence[SignalSpec],
        extends: str | None = None,
        description: str = "",
    ) -> DeviceTypeInfo:
        """A template of signals; ``extends`` names an existing type to inherit from."""
        check_name(name, "device_type")
        _check_unique_specs(signals)
        with self._write() as s:
            _tenant_row(s, tenant_id)
            parent = None if extends is None else _type_row(s, tenant_id, extends)
            row = DeviceType(
                tenant_id=tenant_id,
                name=name,
                extends_id=None if parent is None else parent.id,
                description=description,
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"device type {name!r} exists already") from None
            s.add_all(_type_signal_row(row.id, i, spec) for i, spec in enumerate(signals))
            s.flush()
            return _type_info(s, row)

    def get_device_type(self, tenant_id: int, name: str) -> DeviceTypeInfo:
        with self._read() as s:
            return _type_info(s, _type_row(s, tenant_id, name))

    def list_device_types(self, tenant_id: int) -> list[DeviceTypeInfo]:
        with self._read() as s:
            q = select(DeviceType).where(DeviceType.tenant_id == tenant_id)
            return [_type_info(s, t) for t in s.scalars(q.order_by(DeviceType.name))]

    # -- devices -----------------------------------------------------------------------------

    def create_device(
        self,
        tenant_id: int,
        name: str,
        device_type: str | None = None,
        asset_id: int | None = None,
    ) -> DeviceInfo:
        """Add a device; from a type it gets the type's effective signals as real signals."""
        check_name(name, "device")
        with self._write() as s:
            _tenant_row(s, tenant_id)
            if asset_id is not None:
                _asset_row(s, tenant_id, asset_id)
            dtype = None if device_type is None else _type_row(s, tenant_id, device_type)
            row = Device(
                tenant_id=tenant_id,
                name=name,
                device_type_id=None if dtype is None else dtype.id,
                asset_id=asset_id,
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"device {name!r} exists already") from None
            if dtype is not None:
                specs = _effective_specs(s, dtype)
                s.add_all(_signal_row(tenant_id, row.id, spec) for spec in specs)
            return _device_info(row, device_type)

    def get_device(self, tenant_id: int, name: str) -> DeviceInfo:
        with self._read() as s:
            row = _device_row(s, tenant_id, name)
            return _device_info(row, _type_name(s, row.device_type_id))

    def list_devices(self, tenant_id: int) -> list[DeviceInfo]:
        with self._read() as s:
            q = (
                select(Device, DeviceType.name)
                .outerjoin(DeviceType, Device.device_type_id == DeviceType.id)
                .where(Device.tenant_id == tenant_id)
                .order_by(Device.name)
            )
            return [_device_info(d, t) for d, t in s.execute(q)]

    def device_assets(self, tenant_id: int) -> dict[str, int | None]:
        """Every device of the tenant with the asset it sits at (None: unplaced), one query.

        For subtree scoping (api/scoping.py): filtering a list or checking many names at once
        without a lookup per device.
        """
        with self._read() as s:
            q = select(Device.name, Device.asset_id).where(Device.tenant_id == tenant_id)
            return {name: asset_id for name, asset_id in s.execute(q)}

    def delete_device(self, tenant_id: int, name: str, force: bool = False) -> None:
        """Delete a device; with signals only when ``force`` (their history stays orphaned)."""
        with self._write() as s:
            row = _device_row(s, tenant_id, name)
            ids = s.scalars(select(Signal.id).where(Signal.device_id == row.id)).all()
            if ids and not force:
                raise Conflict(
                    f"device {name!r} has {len(ids)} signals; delete with force to remove them too"
                )
            s.execute(delete(Signal).where(Signal.device_id == row.id))
            s.delete(row)
        self._forget_device(tenant_id, name, ids)

    def _forget_device(self, tenant_id: int, name: str, ids: Iterable[int]) -> None:
        # Under the resolve lock, so a concurrent miss cannot put the old ids back afterwards.
        with self._resolve_lock, self._cache.lock:
            self.generation += 1  # callers that cache resolved ids drop them on a change
            self._cache.signal_ids.pop((tenant_id, name), None)
            for sid in ids:
                self._cache.types.pop(sid, None)

    # -- signals -----------------------------------------------------------------------------

    def create_signal(self, tenant_id: int, device: str, spec: SignalSpec) -> SignalInfo:
        with self._write() as s:
            dev = _device_row(s, tenant_id, device)
            row = _signal_row(tenant_id, dev.id, spec)
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"signal '{device}/{spec.name}' exists already") from None
            return _signal_info(row, device)

    def list_signals(self, tenant_id: int, device: str | None = None) -> list[SignalInfo]:
        with self._read() as s:
            q = _signal_query().where(Signal.tenant_id == tenant_id)
            if device is not None:
                q = q.where(Signal.device_id == _device_row(s, tenant_id, device).id)
            q = q.order_by(Device.name, Signal.id)
            return [_signal_info(sig, dev) for sig, dev in s.execute(q)]

    def get_signal(self, tenant_id: int, key_or_id: str | int) -> SignalInfo:
        """A signal by ``"<device>/<signal>"`` key or by numeric id (a string of digits too)."""
        with self._read() as s:
            sig, dev = _signal_row_by(s, tenant_id, key_or_id)
            return _signal_info(sig, dev)

    def update_signal(
        self,
        tenant_id: int,
        key_or_id: str | int,
        *,
        unit: str | None = None,
        description: str | None = None,
        classification: Classification | str | None = None,
    ) -> SignalInfo:
        """Change unit, description or classification; the data type is fixed once created."""
        if unit is not None and len(unit) > UNIT_LEN:
            raise BadInput(f"unit longer than {UNIT_LEN} characters", "unit")
        with self._write() as s:
            sig, dev = _signal_row_by(s, tenant_id, key_or_id)
            if unit is not None:
                sig.unit = unit
            if description is not None:
                sig.description = description
            if classification is not None:
                sig.classification = _enum(Classification, classification, "classification")
            s.flush()
            return _signal_info(sig, dev)

    def signals_by_ids(self, tenant_id: int, ids: Iterable[int]) -> list[SignalInfo]:
        """Signals by id in the given order; an id of another tenant counts as unknown."""
        wanted = [int(i) for i in ids]
        with self._read() as s:
            q = _signal_query().where(Signal.tenant_id == tenant_id, Signal.id.in_(set(wanted)))
            found = {sig.id: _signal_info(sig, dev) for sig, dev in s.execute(q)}
        unknown = [str(i) for i in dict.fromkeys(wanted) if i not in found]
        if unknown:
            raise NotFound(f"unknown signal ids: {', '.join(unknown)}")
        return [found[i] for i in wanted]

    # -- the hot path ------------------------------------------------------------------------

    def resolve(
        self,
        tenant_id: int,
        device: str,
        names: Sequence[str],
        data_types: Sequence[DataType] | None = None,
    ) -> npt.NDArray[np.int32]:
        """Signal ids of ``names`` (unique names of one batch) on ``device``, in that order.

        Known names are one dict lookup each. Unknown ones are auto-registered (with the
        device, if new) when the tenant allows it, taking their type from ``data_types``
        (default float); otherwise BadInput lists them.
        """
        if data_types is not None and len(data_types) != len(names):
            raise BadInput(f"{len(data_types)} data types for {len(names)} signals", "data_type")
        known = self._cache.signal_ids.get((tenant_id, device))
        if known is not None:
            ids = [known.get(n) for n in names]
            if None not in ids:
                return np.array(ids, dtype=np.int32)
        return self._resolve_slow(tenant_id, device, names, data_types)

    def _resolve_slow(
        self,
        tenant_id: int,
        device: str,
        names: Sequence[str],
        data_types: Sequence[DataType] | None,
    ) -> npt.NDArray[np.int32]:
        check_name(device, "device")
        with self._resolve_lock:
            # Another thread may have registered them while this one waited for the lock.
            known = self._cache.signal_ids.get((tenant_id, device))
            if known is None or any(n not in known for n in names):
                known = self._load_devices(tenant_id, [device]).get(device, {})
            missing = [i for i, n in enumerate(names) if n not in known]
            if missing:
                self._register(tenant_id, device, names, data_types, missing)
                known = self._load_devices(tenant_id, [device])[device]
        return np.array([known[n] for n in names], dtype=np.int32)

    def _register(
        self,
        tenant_id: int,
        device: str,
        names: Sequence[str],
        data_types: Sequence[DataType] | None,
        missing: list[int],
    ) -> None:
        specs = [
            SignalSpec(names[i], DataType.FLOAT if data_types is None else data_types[i])
            for i in missing
        ]
        tenant = self.get_tenant(tenant_id)
        if not tenant.auto_register_signals:
            listed = ", ".join(sp.name for sp in specs)
            raise BadInput(
                f"unknown signals on device {device!r}: {listed}"
                " (auto-registration is off for this tenant)",
                "signal",
            )
        # Another process may insert the same names between our read and write; the unique
        # constraints then fail our transaction and the retry finds theirs.
        for attempt in range(_RETRIES):
            try:
                self._insert_signals(tenant_id, device, specs)
                return
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise

    def _insert_signals(self, tenant_id: int, device: str, specs: list[SignalSpec]) -> None:
        with self._write() as s:
            dev_id = s.scalar(
                select(Device.id).where(Device.tenant_id == tenant_id, Device.name == device)
            )
            if dev_id is None:
                dev = Device(tenant_id=tenant_id, name=device)
                s.add(dev)
                s.flush()
                dev_id = dev.id
            names = [sp.name for sp in specs]
            have = set(
                s.scalars(
                    select(Signal.name).where(Signal.device_id == dev_id, Signal.name.in_(names))
                )
            )
            s.add_all(_signal_row(tenant_id, dev_id, sp) for sp in specs if sp.name not in have)

    def _load_devices(self, tenant_id: int, devices: Sequence[str]) -> dict[str, dict[str, int]]:
        """Read all signals of these devices into the caches; returns device -> name -> id."""
        q = (
            select(Device.name, Signal.name, Signal.id, Signal.data_type)
            .join(Signal, Signal.device_id == Device.id)
            .where(Device.tenant_id == tenant_id, Device.name.in_(set(devices)))
        )
        with self._read() as s:
            rows = s.execute(q).all()
        loaded: dict[str, dict[str, int]] = {}
        for dev, name, sid, _ in rows:
            loaded.setdefault(dev, {})[name] = sid
        with self._cache.lock:
            for dev, by_name in loaded.items():
                self._cache.signal_ids[(tenant_id, dev)] = by_name
            self._cache.types.update({sid: DataType(dt) for _, _, sid, dt in rows})
        return loaded

    def resolve_keys(self, tenant_id: int, keys: Sequence[str]) -> npt.NDArray[np.int32]:
        """Signal ids of ``"<device>/<signal>"`` keys, in order. Never registers anything."""
        pairs = [split_key(k) for k in keys]
        ids = [self._cached_id(tenant_id, d, n) for d, n in pairs]
        if None in ids:
            with self._resolve_lock:
                self._load_devices(
                    tenant_id, [d for (d, _), i in zip(pairs, ids, strict=True) if i is None]
                )
            ids = [self._cached_id(tenant_id, d, n) for d, n in pairs]
            unknown = [k for k, i in zip(keys, ids, strict=True) if i is None]
            if unknown:
                raise NotFound(f"unknown signals: {', '.join(dict.fromkeys(unknown))}")
        return np.array(ids, dtype=np.int32)

    def _cached_id(self, tenant_id: int, device: str, name: str) -> int | None:
        known = self._cache.signal_ids.get((tenant_id, device))
        return None if known is None else known.get(name)

    def signal_types(self, ids: Iterable[int]) -> list[DataType]:
        """Data types of signal ids (any tenant: ids come from resolve), cached."""
        wanted = [int(i) for i in ids]
        missing = {i for i in wanted if i not in self._cache.types}
        if missing:
            with self._read() as s:
                q = select(Signal.id, Signal.data_type).where(Signal.id.in_(missing))
                found = {sid: DataType(dt) for sid, dt in s.execute(q)}
            with self._cache.lock:
                self._cache.types.update(found)
            unknown = sorted(missing - found.keys())
            if unknown:
                raise NotFound(f"unknown signal ids: {', '.join(map(str, unknown))}")
        return [self._cache.types[i] for i in wanted]


# ---------------------------------------------------------------------------------------------
# Alembic
# ---------------------------------------------------------------------------------------------


def alembic_config(connection: Any = None) -> Any:
    """An Alembic Config built in code (no alembic.ini) for the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    cfg.attributes["connection"] = connection
    return cfg


# ---------------------------------------------------------------------------------------------
# Row helpers (inside a session)
# ---------------------------------------------------------------------------------------------


def _check_retention(days: int | None, allow_zero: bool = False) -> None:
    if days is None:
        return
    if isinstance(days, bool) or not isinstance(days, int) or days < (0 if allow_zero else 1):
        raise BadInput(f"retention_days must be a positive number of days: {days!r}", "retention")


def _check_unique_specs(specs: Sequence[SignalSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise BadInput(f"signal {spec.name!r} declared twice", "signals")
        seen.add(spec.name)


def _check_parent(s: Session, tenant_id: int, level: AssetLevel, parent_id: int | None) -> None:
    depth = LEVELS.index(level)
    if depth == 0:
        if parent_id is not None:
            raise BadInput("an enterprise is the top level and has no parent", "parent_id")
        return
    if parent_id is None:
        raise BadInput(f"a {level} needs a parent {LEVELS[depth - 1]}", "parent_id")
    parent = _asset_row(s, tenant_id, parent_id)
    if parent.level != LEVELS[depth - 1]:
        raise BadInput(
            f"a {level} belongs under a {LEVELS[depth - 1]}, not under a {parent.level}",
            "parent_id",
        )


def _tenant_row(s: Session, id_or_name: int | str) -> Tenant:
    col = Tenant.name if isinstance(id_or_name, str) else Tenant.id
    row = s.scalar(select(Tenant).where(col == id_or_name))
    if row is None:
        raise NotFound(f"tenant {id_or_name!r} not found")
    return row


def _asset_row(s: Session, tenant_id: int, asset_id: int) -> Asset:
    row = s.get(Asset, asset_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"asset {asset_id} not found")
    return row


def _type_row(s: Session, tenant_id: int, name: str) -> DeviceType:
    row = s.scalar(
        select(DeviceType).where(DeviceType.tenant_id == tenant_id, DeviceType.name == name)
    )
    if row is None:
        raise NotFound(f"device type {name!r} not found")
    return row


def _type_name(s: Session, type_id: int | None) -> str | None:
    return (
        None
        if type_id is None
        else s.scalar(select(DeviceType.name).where(DeviceType.id == type_id))
    )


def _device_row(s: Session, tenant_id: int, name: str) -> Device:
    row = s.scalar(select(Device).where(Device.tenant_id == tenant_id, Device.name == name))
    if row is None:
        raise NotFound(f"device {name!r} not found")
    return row


def _signal_query() -> Any:
    return select(Signal, Device.name).join(Device, Signal.device_id == Device.id)


def _signal_row_by(s: Session, tenant_id: int, key_or_id: str | int) -> tuple[Signal, str]:
    q = _signal_query().where(Signal.tenant_id == tenant_id)
    if isinstance(key_or_id, int) or key_or_id.isdigit():
        q = q.where(Signal.id == int(key_or_id))
    else:
        device, name = split_key(key_or_id)
        q = q.where(Device.name == device, Signal.name == name)
    row = s.execute(q).first()
    if row is None:
        raise NotFound(f"signal {key_or_id!r} not found")
    return row


def _effective_specs(s: Session, dtype: DeviceType) -> list[SignalSpec]:
    """Signals of the type and its ancestors: root's first, nearer ones override by name."""
    chain: list[DeviceType] = []
    node: DeviceType | None = dtype
    while node is not None and node not in chain:  # `not in chain` guards hand-edited cycles
        chain.append(node)
        node = None if node.extends_id is None else s.get(DeviceType, node.extends_id)
    merged: dict[str, SignalSpec] = {}
    for t in reversed(chain):
        q = select(DeviceTypeSignal).where(DeviceTypeSignal.type_id == t.id)
        for row in s.scalars(q.order_by(DeviceTypeSignal.position)):
            merged[row.name] = SignalSpec(
                row.name,
                DataType(row.data_type),
                row.unit,
                row.description,
                Classification(row.classification),
            )
    return list(merged.values())


def _type_signal_row(type_id: int, position: int, spec: SignalSpec) -> DeviceTypeSignal:
    return DeviceTypeSignal(
        type_id=type_id,
        name=spec.name,
        position=position,
        unit=spec.unit,
        data_type=spec.data_type.value,
        description=spec.description,
        classification=spec.classification.value,
    )


def _signal_row(tenant_id: int, device_id: int, spec: SignalSpec) -> Signal:
    return Signal(
        tenant_id=tenant_id,
        device_id=device_id,
        name=spec.name,
        unit=spec.unit,
        data_type=spec.data_type.value,
        description=spec.description,
        classification=spec.classification.value,
    )


def _tenant_info(t: Tenant) -> TenantInfo:
    return TenantInfo(t.id, t.name, t.auto_register_signals, t.retention_days, t.created_at)


def _asset_info(a: Asset) -> AssetInfo:
    return AssetInfo(a.id, a.tenant_id, AssetLevel(a.level), a.name, a.parent_id)


def _type_info(s: Session, t: DeviceType) -> DeviceTypeInfo:
    return DeviceTypeInfo(
        t.id,
        t.tenant_id,
        t.name,
        _type_name(s, t.extends_id),
        t.description,
        tuple(_effective_specs(s, t)),
    )


def _device_info(d: Device, type_name: str | None) -> DeviceInfo:
    return DeviceInfo(d.id, d.tenant_id, d.name, type_name, d.asset_id, d.created_at)


def _signal_info(sig: Signal, device: str) -> SignalInfo:
    return SignalInfo(
        sig.id,
        sig.tenant_id,
        device,
        sig.name,
        DataType(sig.data_type),
        sig.unit,
        sig.description,
        Classification(sig.classification),
        sig.created_at,
    )
