"""The registry service against a real SQLite file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

import shopfloor.registry as registry_pkg
from shopfloor.core.errors import BadInput, Conflict, NotFound
from shopfloor.core.types import Classification, DataType
from shopfloor.registry import AssetLevel, Registry, SignalSpec, TenantInfo


@contextmanager
def count_sql(reg: Registry) -> Iterator[list[str]]:
    """Collect every SQL statement the registry's engine sends while the block runs."""
    seen: list[str] = []

    def on_execute(*args: Any) -> None:
        seen.append(args[2])

    event.listen(reg.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(reg.engine, "before_cursor_execute", on_execute)


def test_public_names_are_exported() -> None:
    for name in registry_pkg.__all__:
        assert hasattr(registry_pkg, name)


# -- tenants -----------------------------------------------------------------------------------


def test_create_tenant_returns_a_working_key(registry: Registry) -> None:
    info, key = registry.create_tenant("plant-a", retention_days=30)
    assert len(key) >= 40
    assert registry.tenant_by_api_key(key) == info
    assert registry.tenant_by_api_key(key + "x") is None
    assert info.auto_register_signals is True
    assert info.created_at.tzinfo is not None
    assert registry.get_tenant("plant-a") == registry.get_tenant(info.id) == info


def test_duplicate_tenant_is_a_conflict(registry: Registry) -> None:
    registry.create_tenant("a")
    with pytest.raises(Conflict):
        registry.create_tenant("a")


def test_api_key_lookup_is_cached(registry: Registry) -> None:
    _, key = registry.create_tenant("a")
    registry.tenant_by_api_key(key)
    with count_sql(registry) as sql:
        registry.tenant_by_api_key(key)
    assert sql == []


def test_rotate_invalidates_the_cached_key(registry: Registry) -> None:
    info, old = registry.create_tenant("a")
    assert registry.tenant_by_api_key(old) is not None
    new = registry.rotate_api_key(info.id)
    assert registry.tenant_by_api_key(old) is None
    assert registry.tenant_by_api_key(new) == info


def test_update_tenant_refreshes_the_cached_tenant(registry: Registry) -> None:
    info, key = registry.create_tenant("a")
    registry.tenant_by_api_key(key)
    registry.update_tenant(info.id, auto_register_signals=False, retention_days=7)
    cached = registry.tenant_by_api_key(key)
    assert cached is not None
    assert (cached.auto_register_signals, cached.retention_days) == (False, 7)
    registry.update_tenant(info.id, retention_days=0)  # 0 clears
    assert registry.get_tenant(info.id).retention_days is None


def test_bad_retention_is_rejected(registry: Registry) -> None:
    with pytest.raises(BadInput):
        registry.create_tenant("a", retention_days=0)


# -- hierarchy ---------------------------------------------------------------------------------


def test_each_level_sits_right_below_its_parent(registry: Registry, tenant: TenantInfo) -> None:
    parent = None
    for level in AssetLevel:
        asset = registry.create_asset(tenant.id, level, f"{level}-1", parent)
        assert asset.level == level
        parent = asset.id
    tree = registry.tree(tenant.id)
    depth, node = 0, tree[0]
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert (depth, node["level"]) == (4, "machine")


@pytest.mark.parametrize(
    ("level", "parent_level"),
    [("site", None), ("area", "enterprise"), ("machine", "area"), ("enterprise", "enterprise")],
)
def test_level_rules(
    registry: Registry, tenant: TenantInfo, level: str, parent_level: str | None
) -> None:
    chain: dict[str, int] = {}
    parent = None
    for lvl in ("enterprise", "site", "area"):
        parent = registry.create_asset(tenant.id, lvl, "x", parent).id
        chain[lvl] = parent
    with pytest.raises(BadInput) as err:
        registry.create_asset(
            tenant.id, level, "y", None if parent_level is None else chain[parent_level]
        )
    assert err.value.field == "parent_id"


def test_unknown_level_is_bad_input(registry: Registry, tenant: TenantInfo) -> None:
    with pytest.raises(BadInput, match="level"):
        registry.create_asset(tenant.id, "plant", "x")


def test_sibling_names_are_unique(registry: Registry, tenant: TenantInfo) -> None:
    ent = registry.create_asset(tenant.id, "enterprise", "acme")
    with pytest.raises(Conflict):
        registry.create_asset(tenant.id, "enterprise", "acme")
    site = registry.create_asset(tenant.id, "site", "berlin", ent.id)
    with pytest.raises(Conflict):
        registry.create_asset(tenant.id, "site", "berlin", ent.id)
    other = registry.create_asset(tenant.id, "enterprise", "other")
    assert registry.create_asset(tenant.id, "site", "berlin", other.id).id != site.id


def test_delete_asset_refuses_children_and_devices(registry: Registry, tenant: TenantInfo) -> None:
    ent = registry.create_asset(tenant.id, "enterprise", "acme")
    site = registry.create_asset(tenant.id, "site", "berlin", ent.id)
    with pytest.raises(Conflict, match="child"):
        registry.delete_asset(tenant.id, ent.id)
    registry.create_device(tenant.id, "meter", asset_id=site.id)
    with pytest.raises(Conflict, match="devices"):
        registry.delete_asset(tenant.id, site.id)
    registry.delete_device(tenant.id, "meter")
    registry.delete_asset(tenant.id, site.id)
    with pytest.raises(NotFound):
        registry.get_asset(tenant.id, site.id)


def test_tree_lists_devices_under_their_asset(registry: Registry, tenant: TenantInfo) -> None:
    ent = registry.create_asset(tenant.id, "enterprise", "acme")
    site = registry.create_asset(tenant.id, "site", "berlin", ent.id)
    registry.create_device(tenant.id, "energy-meter", asset_id=site.id)
    registry.create_device(tenant.id, "loose")
    assert registry.tree(tenant.id) == [
        {
            "id": ent.id,
            "level": "enterprise",
            "name": "acme",
            "devices": [],
            "children": [
                {
                    "id": site.id,
                    "level": "site",
                    "name": "berlin",
                    "devices": ["energy-meter"],
                    "children": [],
                }
            ],
        }
    ]


# -- device types ------------------------------------------------------------------------------


def _motor_and_press(registry: Registry, tenant_id: int) -> None:
    registry.create_device_type(
        tenant_id,
        "motor",
        [SignalSpec("temp", unit="degC"), SignalSpec("speed", DataType.INT, unit="rpm")],
        description="any electric motor",
    )
    registry.create_device_type(
        tenant_id,
        "press",
        [
            SignalSpec("force", unit="kN", classification=Classification.CORE),
            SignalSpec("temp", unit="K", description="overridden"),
        ],
        extends="motor",
    )


def test_type_inherits_and_overrides(registry: Registry, tenant: TenantInfo) -> None:
    _motor_and_press(registry, tenant.id)
    press = registry.get_device_type(tenant.id, "press")
    assert press.extends == "motor"
    assert [(s.name, s.unit) for s in press.signals] == [
        ("temp", "K"),
        ("speed", "rpm"),
        ("force", "kN"),
    ]
    motor = registry.get_device_type(tenant.id, "motor")
    assert [s.unit for s in motor.signals] == ["degC", "rpm"]


def test_three_level_inheritance(registry: Registry, tenant: TenantInfo) -> None:
    _motor_and_press(registry, tenant.id)
    registry.create_device_type(
        tenant.id, "servo-press", [SignalSpec("speed", DataType.FLOAT)], extends="press"
    )
    specs = {s.name: s for s in registry.get_device_type(tenant.id, "servo-press").signals}
    assert specs["speed"].data_type == DataType.FLOAT
    assert specs["temp"].unit == "K"
    assert specs["force"].classification == Classification.CORE


def test_type_rules(registry: Registry, tenant: TenantInfo) -> None:
    with pytest.raises(NotFound):
        registry.create_device_type(tenant.id, "a", [], extends="missing")
    with pytest.raises(BadInput, match="twice"):
        registry.create_device_type(tenant.id, "a", [SignalSpec("x"), SignalSpec("x")])
    registry.create_device_type(tenant.id, "a", [])
    with pytest.raises(Conflict):
        registry.create_device_type(tenant.id, "a", [])
    assert [t.name for t in registry.list_device_types(tenant.id)] == ["a"]


def test_device_from_type_gets_its_signals(registry: Registry, tenant: TenantInfo) -> None:
    _motor_and_press(registry, tenant.id)
    device = registry.create_device(tenant.id, "press-1", "press")
    assert device.device_type == "press"
    signals = registry.list_signals(tenant.id, "press-1")
    assert [(s.key, s.unit, s.data_type) for s in signals] == [
        ("press-1/temp", "K", DataType.FLOAT),
        ("press-1/speed", "rpm", DataType.INT),
        ("press-1/force", "kN", DataType.FLOAT),
    ]
    assert signals[2].classification == Classification.CORE
    assert signals[0].classification == Classification.GENERAL


def test_device_rules(registry: Registry, tenant: TenantInfo) -> None:
    registry.create_device(tenant.id, "d1")
    with pytest.raises(Conflict):
        registry.create_device(tenant.id, "d1")
    with pytest.raises(NotFound):
        registry.create_device(tenant.id, "d2", device_type="missing")
    with pytest.raises(NotFound):
        registry.create_device(tenant.id, "d2", asset_id=999)
    with pytest.raises(BadInput):
        registry.create_device(tenant.id, "a/b")


# -- signals -----------------------------------------------------------------------------------


def test_signal_crud(registry: Registry, tenant: TenantInfo) -> None:
    registry.create_device(tenant.id, "d1")
    sig = registry.create_signal(tenant.id, "d1", SignalSpec("temp", unit="degC"))
    assert sig.key == "d1/temp"
    with pytest.raises(Conflict):
        registry.create_signal(tenant.id, "d1", SignalSpec("temp"))
    with pytest.raises(NotFound):
        registry.create_signal(tenant.id, "nope", SignalSpec("temp"))
    assert registry.get_signal(tenant.id, "d1/temp") == sig
    assert registry.get_signal(tenant.id, sig.id) == sig
    assert registry.get_signal(tenant.id, str(sig.id)) == sig
    updated = registry.update_signal(
        tenant.id, "d1/temp", unit="K", classification="important", description="inlet"
    )
    assert (updated.unit, updated.classification, updated.description) == (
        "K",
        Classification.IMPORTANT,
        "inlet",
    )
    assert updated.data_type == sig.data_type


def test_spec_validation() -> None:
    with pytest.raises(BadInput):
        SignalSpec("x", data_type="double")  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        SignalSpec("x", classification="secret")  # type: ignore[arg-type]
    assert SignalSpec("x", "int").data_type is DataType.INT  # type: ignore[arg-type]


def test_delete_device_needs_force_and_ids_are_never_reused(
    registry: Registry, tenant: TenantInfo
) -> None:
    [old] = registry.resolve(tenant.id, "d1", ["temp"])
    with pytest.raises(Conflict, match="force"):
        registry.delete_device(tenant.id, "d1")
    registry.delete_device(tenant.id, "d1", force=True)
    with pytest.raises(NotFound):
        registry.get_device(tenant.id, "d1")
    [new] = registry.resolve(tenant.id, "d1", ["temp"])
    assert new > old


def test_signals_by_ids_keeps_order(registry: Registry, tenant: TenantInfo) -> None:
    ids = registry.resolve(tenant.id, "d1", ["a", "b", "c"])
    got = registry.signals_by_ids(tenant.id, [int(ids[2]), int(ids[0])])
    assert [s.name for s in got] == ["c", "a"]
    with pytest.raises(NotFound, match="99999"):
        registry.signals_by_ids(tenant.id, [int(ids[0]), 99999])


# -- resolve -----------------------------------------------------------------------------------


def test_resolve_auto_registers_with_types(registry: Registry, tenant: TenantInfo) -> None:
    ids = registry.resolve(
        tenant.id, "plc-7", ["temp", "count", "on"], [DataType.FLOAT, DataType.INT, DataType.BOOL]
    )
    assert ids.dtype == np.int32
    assert registry.get_device(tenant.id, "plc-7").device_type is None
    assert registry.signal_types(ids) == [DataType.FLOAT, DataType.INT, DataType.BOOL]
    again = registry.resolve(tenant.id, "plc-7", ["on", "temp", "new"])
    assert list(again[:2]) == [ids[2], ids[0]]
    assert registry.get_signal(tenant.id, int(again[2])).data_type == DataType.FLOAT


def test_resolve_hits_issue_no_sql(registry: Registry, tenant: TenantInfo) -> None:
    _motor_and_press(registry, tenant.id)
    registry.create_device(tenant.id, "press-1", "press")
    first = registry.resolve(tenant.id, "press-1", ["force", "temp"])  # loads the cache
    with count_sql(registry) as sql:
        for _ in range(100):
            again = registry.resolve(tenant.id, "press-1", ["force", "temp"])
        registry.resolve_keys(tenant.id, ["press-1/speed"])
        registry.signal_types(again)
    assert sql == []
    assert list(again) == list(first)


def test_a_miss_goes_to_the_database(registry: Registry, tenant: TenantInfo) -> None:
    registry.resolve(tenant.id, "d1", ["a"])
    with count_sql(registry) as sql:
        registry.resolve(tenant.id, "d1", ["a", "b"])
    assert any("INSERT INTO signals" in s for s in sql)


def test_auto_registration_off_gives_the_exact_error(
    registry: Registry, tenant: TenantInfo
) -> None:
    registry.resolve(tenant.id, "d1", ["known"])
    registry.update_tenant(tenant.id, auto_register_signals=False)
    assert list(registry.resolve(tenant.id, "d1", ["known"])) == [1]
    with pytest.raises(BadInput) as err:
        registry.resolve(tenant.id, "d1", ["known", "a", "b"])
    assert err.value.message == (
        "unknown signals on device 'd1': a, b (auto-registration is off for this tenant)"
    )
    assert err.value.field == "signal"
    assert [s.name for s in registry.list_signals(tenant.id)] == ["known"]
    with pytest.raises(BadInput, match="auto-registration is off"):
        registry.resolve(tenant.id, "new-device", ["x"])
    with pytest.raises(NotFound):
        registry.get_device(tenant.id, "new-device")


@pytest.mark.parametrize(
    ("device", "name"),
    [("d1", "a/b"), ("d1", ""), ("d1", "x" * 201), ("d1", "tab\there"), ("d/1", "ok")],
)
def test_resolve_rejects_bad_names(
    registry: Registry, tenant: TenantInfo, device: str, name: str
) -> None:
    with pytest.raises(BadInput) as err:
        registry.resolve(tenant.id, device, ["fine", name])
    assert repr(name if device == "d1" else device) in err.value.message
    assert registry.list_signals(tenant.id) == []


def test_resolve_checks_data_types_length(registry: Registry, tenant: TenantInfo) -> None:
    with pytest.raises(BadInput):
        registry.resolve(tenant.id, "d1", ["a", "b"], [DataType.FLOAT])


def test_concurrent_resolve_creates_each_signal_once(
    registry: Registry, tenant: TenantInfo
) -> None:
    names = [f"s{i}" for i in range(50)]
    barrier = threading.Barrier(8)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            results.append(registry.resolve(tenant.id, "new-dev", names).tolist())
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 8
    assert all(r == results[0] for r in results)
    signals = registry.list_signals(tenant.id, "new-dev")
    assert sorted(s.name for s in signals) == sorted(names)
    assert len(registry.list_devices(tenant.id)) == 1


def test_concurrent_resolve_across_registry_instances(
    registry: Registry, tenant: TenantInfo
) -> None:
    """Two processes share one database; their caches do not see each other's inserts."""
    other = Registry(registry.url)
    try:
        barrier = threading.Barrier(2)
        out: dict[str, list[int]] = {}

        def work(label: str, reg: Registry) -> None:
            barrier.wait()
            out[label] = reg.resolve(tenant.id, "d", ["x", "y"]).tolist()

        threads = [
            threading.Thread(target=work, args=("a", registry)),
            threading.Thread(target=work, args=("b", other)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out["a"] == out["b"]
        assert len(registry.list_signals(tenant.id)) == 2
    finally:
        other.close()


def test_write_transactions_take_turns_across_registry_instances(registry: Registry) -> None:
    """Read-then-write in ``_write`` (as the audit chain and the credential generation do) loses
    no update when two processes write at once: SQLite's BEGIN IMMEDIATE, PostgreSQL's
    transaction lock."""
    from sqlalchemy import select

    from shopfloor.registry.models import DeviceAuthState

    other = Registry(registry.url)
    rounds = 15

    def bump(reg: Registry) -> None:
        for _ in range(rounds):
            with reg._write() as s:
                row = s.scalars(select(DeviceAuthState).where(DeviceAuthState.id == 1)).one()
                seen = row.generation
                time.sleep(0.002)  # the other writer gets its chance to interleave here
                row.generation = seen + 1

    try:
        threads = [threading.Thread(target=bump, args=(r,)) for r in (registry, other) * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with registry._read() as s:
            gen = s.scalar(select(DeviceAuthState.generation).where(DeviceAuthState.id == 1))
        assert gen == 4 * rounds
    finally:
        other.close()


def test_resolve_keys(registry: Registry, tenant: TenantInfo) -> None:
    ids = registry.resolve(tenant.id, "d1", ["a", "b"])
    fresh = Registry(registry.url)  # an empty cache: the keys come from the database
    try:
        assert list(fresh.resolve_keys(tenant.id, ["d1/b", "d1/a"])) == [ids[1], ids[0]]
        with pytest.raises(NotFound) as err:
            fresh.resolve_keys(tenant.id, ["d1/a", "d1/zz", "d9/a"])
        assert "d1/zz" in str(err.value)
        assert "d9/a" in str(err.value)
        with pytest.raises(BadInput):
            fresh.resolve_keys(tenant.id, ["no-slash"])
    finally:
        fresh.close()
    assert len(registry.list_signals(tenant.id)) == 2  # never auto-registers


def test_signal_types_of_unknown_id(registry: Registry) -> None:
    with pytest.raises(NotFound, match="12345"):
        registry.signal_types([12345])


# -- tenant isolation --------------------------------------------------------------------------


def test_tenants_are_isolated(registry: Registry) -> None:
    a = registry.create_tenant("a")[0]
    b = registry.create_tenant("b")[0]
    b_ids = registry.resolve(b.id, "shared-name", ["temp"])
    b_asset = registry.create_asset(b.id, "enterprise", "b-corp")
    registry.create_device_type(b.id, "t", [])

    # Same device name in A is a different device with its own signal.
    a_ids = registry.resolve(a.id, "shared-name", ["temp"])
    assert a_ids[0] != b_ids[0]
    registry.delete_device(a.id, "shared-name", force=True)
    assert list(registry.resolve(b.id, "shared-name", ["temp"])) == list(b_ids)

    with pytest.raises(NotFound):
        registry.get_signal(a.id, int(b_ids[0]))
    with pytest.raises(NotFound):
        registry.get_signal(a.id, "shared-name/temp")
    with pytest.raises(NotFound, match=str(b_ids[0])):
        registry.signals_by_ids(a.id, [int(b_ids[0])])
    with pytest.raises(NotFound):
        registry.resolve_keys(a.id, ["shared-name/temp"])
    with pytest.raises(NotFound):
        registry.get_device(a.id, "shared-name")
    with pytest.raises(NotFound):
        registry.get_asset(a.id, b_asset.id)
    with pytest.raises(NotFound):
        registry.create_asset(a.id, "site", "s", b_asset.id)
    with pytest.raises(NotFound):
        registry.create_device(a.id, "d", asset_id=b_asset.id)
    with pytest.raises(NotFound):
        registry.create_device(a.id, "d", device_type="t")
    with pytest.raises(NotFound):
        registry.update_signal(a.id, int(b_ids[0]), unit="x")
    assert registry.list_signals(a.id) == []
    assert registry.list_devices(a.id) == []
    assert registry.list_assets(a.id) == []
    assert registry.tree(a.id) == []


def test_registry_urls_take_the_historians_plain_postgresql_scheme() -> None:
    from shopfloor.registry.service import registry_url

    for plain in ("postgresql://sf@db/sf", "postgres://sf@db/sf"):
        assert registry_url(plain).drivername == "postgresql+psycopg"
    assert registry_url("postgresql+psycopg://sf@db/sf").drivername == "postgresql+psycopg"
    assert registry_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(BadInput, match=r"not a database URL.*postgresql://"):
        Registry("registry.db")
