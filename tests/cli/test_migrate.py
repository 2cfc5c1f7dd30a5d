"""``shopfloor migrate``: an embedded deployment (SQLite + DuckDB) copied into a throwaway
PostgreSQL, verified by the command, then used by a Platform on the PostgreSQL URLs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from shopfloor.api.platform import Platform
from shopfloor.cli.main import app
from shopfloor.cli.migrate import END, START, PointSum, _points_of
from shopfloor.core.config import Settings
from shopfloor.core.kinds import Role
from shopfloor.core.types import DataType, make_batch
from shopfloor.historian.duckdb_backend import DuckDBHistorian
from shopfloor.registry import SignalSpec
from shopfloor.registry import models as m
from shopfloor.rules.model import Event
from tests.historian import postgres_service
from tests.services import require

PASSWORD = "correct-horse-battery-9"
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9
BAD = 0x80000000


@dataclass
class Source:
    data: Path
    points: int
    # What the embedded deployment answered before the migration, to compare with afterwards.
    devices: dict[str, list[tuple[str, str | None]]]
    rules: list[str]
    alarms: list[tuple[str, str, str]]
    deleted_signal_id: int
    registry_sha: str
    wal_files: list[tuple[str, int]]


def _pg() -> postgres_service.PostgresCluster:
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    return postgres_service.shared_cluster()


def _fingerprint(data: Path) -> tuple[str, list[tuple[str, int]]]:
    sha = hashlib.sha256((data / "registry.db").read_bytes()).hexdigest()
    wal = sorted((p.name, p.stat().st_size) for p in (data / "historian").glob("wal-*.arrow"))
    return sha, wal


def _write(plat: Platform, tenant: int, sids: list[int], n: int, t0: int, kind: str) -> int:
    """``n`` points per signal at 1 s, values of ``kind``, every 97th of bad quality."""
    ts = np.tile(t0 + np.arange(n, dtype=np.int64) * S, len(sids))
    sid = np.repeat(np.asarray(sids, dtype=np.int32), n)
    quality = np.where(np.arange(len(ts)) % 97 == 0, BAD, 0).astype(np.uint32)
    if kind == "string":
        text = [f"state-{i % 7}" for i in range(len(ts))]
        plat.historian.write(make_batch(tenant, sid, ts, None, quality, text))
    else:
        i = np.arange(len(ts))
        values = {
            "float": np.sin(i / 50.0) * 40.0 + 20.0,
            "int": (i % 1000).astype(np.float64),
            "bool": (i % 3 == 0).astype(np.float64),
        }[kind]
        plat.historian.write(make_batch(tenant, sid, ts, values, quality))
    return len(ts)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Two tenants with an asset tree, typed devices, users, a rule and its alarms, a dashboard,
    and ~120K points of four kinds: compacted blocks, then hot rows (one overwriting a block)."""
    data = tmp_path_factory.mktemp("embedded") / "data"
    plat = Platform(Settings(data_dir=data, mqtt_mode="off"))
    points = 0
    try:
        reg = plat.registry
        acme, _ = reg.create_tenant("acme")
        beta, _ = reg.create_tenant("beta", retention_days=30)
        ent = reg.create_asset(acme.id, "enterprise", "works")
        site = reg.create_asset(acme.id, "site", "plant", ent.id)
        area = reg.create_asset(acme.id, "area", "press-shop", site.id)
        line = reg.create_asset(acme.id, "line", "line-1", area.id)
        specs = [
            SignalSpec("temp", unit="°C"),
            SignalSpec("count", DataType.INT),
            SignalSpec("run", DataType.BOOL),
            SignalSpec("label", DataType.STRING),
        ]
        reg.create_device_type(acme.id, "press", specs)
        reg.create_device_type(acme.id, "big-press", [SignalSpec("force")], extends="press")
        reg.create_device(acme.id, "press-01", "press", line.id)
        reg.create_device(acme.id, "press-02", "big-press")
        reg.create_device(acme.id, "scrap", "press")
        # Deleted: its signals' ids must never be given out again, on PostgreSQL neither.
        deleted = max(s.id for s in reg.list_signals(acme.id, "scrap"))
        reg.delete_device(acme.id, "scrap", force=True)
        reg.create_device_type(beta.id, "oven", [SignalSpec("temp")])
        reg.create_device(beta.id, "oven-01", "oven")
        plat.auth.create_user(acme.id, "ann", PASSWORD, [Role.ENGINEER], display_name="Ann")
        plat.auth.create_user(beta.id, "bob", PASSWORD, [(Role.OPERATOR, None)])
        plat.rules.create(
            acme.id, "hot", "threshold", {"signal": "temp", "limit": 80.0}, device_type="press"
        )
        plat.alarms.apply(acme.id, [Event("hot", "press-01", "activated", T0 + 5 * S, 95.0)])
        plat.alarms.apply(acme.id, [Event("hot", "press-02", "activated", T0 + 6 * S, 90.0)])
        plat.alarms.acknowledge(acme.id, "hot", "press-02", "ann", "seen")
        with reg._write() as s:
            s.add(
                m.Dashboard(
                    tenant_id=acme.id,
                    owner="user:1",
                    scope="tenant",
                    name="Line 1",
                    widgets='[{"kind": "chart", "signals": ["press-01/temp"]}]',
                    created_by="ann",
                    updated_by="ann",
                )
            )

        def ids(tenant: int, device: str, kind: DataType) -> list[int]:
            return [s.id for s in reg.list_signals(tenant, device) if s.data_type == kind]

        floats = ids(acme.id, "press-01", DataType.FLOAT) + ids(acme.id, "press-02", DataType.FLOAT)
        # Compacted blocks first: every kind of value, hours of it, some of bad quality.
        points += _write(plat, acme.id, floats, 13_000, T0, "float")
        points += _write(plat, acme.id, ids(acme.id, "press-01", DataType.INT), 10_000, T0, "int")
        points += _write(plat, acme.id, ids(acme.id, "press-02", DataType.BOOL), 10_000, T0, "bool")
        points += _write(
            plat, acme.id, ids(acme.id, "press-01", DataType.STRING), 3_000, T0, "string"
        )
        points += _write(
            plat, beta.id, ids(beta.id, "oven-01", DataType.FLOAT), 30_000, T0, "float"
        )
        assert plat.historian.compact() == points
        # Hot rows, not compacted: new hours, plus one point overwriting a compacted one.
        points += _write(plat, acme.id, floats, 3_000, T0 + 20_000 * S, "float")
        temp = ids(acme.id, "press-01", DataType.FLOAT)[0]
        plat.historian.write(make_batch(acme.id, [temp], [T0 + 7 * S], [-1.5]))
        devices = {
            t.name: [(d.name, d.device_type) for d in reg.list_devices(t.id)]
            for t in reg.list_tenants()
        }
        rules = [r.name for r in plat.rules.list_rules(acme.id)]
        alarms = sorted(
            (a.rule, a.device, str(a.alarm.state)) for a in plat.alarms.list_alarms(acme.id)
        )
    finally:
        plat.close()
    sha, wal = _fingerprint(data)
    assert wal, "the hot rows must stay in the log for this test"
    return Source(data, points, devices, rules, alarms, deleted, sha, wal)


def _migrate(data: Path, registry_url: str, historian_url: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["migrate", "-d", str(data), "--to-registry", registry_url,
         "--to-historian", historian_url],
    )  # fmt: skip
    return result.exit_code, result.output


def test_round_trip_counts_and_checksums_match(source: Source) -> None:
    target = _pg().new_database("mig")  # one database for both, as a deployment would
    started = time.perf_counter()
    code, out = _migrate(source.data, target, target)
    seconds = time.perf_counter() - started
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["points"] == source.points
    assert summary["tenants"] == 2
    assert summary["mismatches"] == []
    assert "verified:" in out
    assert f"registry_url: {target}" in out
    assert f"historian_url: {target}" in out
    print(f"migrated {source.points:,} points in {seconds:.1f} s: {summary}")
    # The source is left as it was: same registry file, same log files.
    assert _fingerprint(source.data) == (source.registry_sha, source.wal_files)

    settings = Settings(
        data_dir=source.data, mqtt_mode="off", registry_url=target, historian_url=target
    )
    src = DuckDBHistorian(source.data / "historian", background=False)
    plat = Platform(settings)
    try:
        reg = plat.registry
        assert reg.engine.dialect.name == "postgresql"
        got = {
            t.name: [(d.name, d.device_type) for d in reg.list_devices(t.id)]
            for t in reg.list_tenants()
        }
        assert got == source.devices
        acme = reg.get_tenant("acme")
        assert reg.get_signal(acme.id, "press-01/temp").unit == "°C"
        assert [n["name"] for n in reg.tree(acme.id)] == ["works"]
        # Rules and alarms through their stores, on PostgreSQL.
        assert [r.name for r in plat.rules.list_rules(acme.id)] == source.rules
        alarms = sorted(
            (a.rule, a.device, str(a.alarm.state)) for a in plat.alarms.list_alarms(acme.id)
        )
        assert alarms == source.alarms
        plat.alarms.acknowledge(acme.id, "hot", "press-01", "ann", "after the move")
        assert plat.alarms.get(acme.id, "hot", "press-01").alarm.state == "ack_active"
        cold = {"signal": "temp", "limit": 5.0, "direction": "low"}
        plat.rules.create(acme.id, "cold", "threshold", cold, device="press-01")
        [ev] = plat.alarms.apply(acme.id, [Event("cold", "press-01", "activated", T0, 1.0)])
        assert (ev.from_state, ev.to_state) == ("normal", "unack_active")
        # 3 from the source, the acknowledgement and the activation here, with new ids after
        # the copied ones (the sequence was moved past them).
        assert sorted(h.id for h in plat.alarms.history(acme.id)) == [1, 2, 3, 4, 5]
        # A login with the password set before the move; the audit chain still verifies.
        _, secret, user = plat.auth.login("acme", "ann", PASSWORD)
        assert (user.username, user.display_name) == ("ann", "Ann")
        assert plat.auth.resolve(secret, "test") is not None
        assert plat.audit.verify().ok
        # Ids go on above every id the source gave out, the deleted device's signals included.
        new = reg.create_signal(acme.id, "press-01", SignalSpec("new"))
        assert new.id > source.deleted_signal_id
        with reg._read() as s:
            assert s.query(m.Dashboard).one().name == "Line 1"
        # Points of a range: compacted, hot and the overwritten one, equal to the source's.
        sids = [s.id for s in reg.list_signals(acme.id) if s.name != "new"]
        lo, hi = T0, T0 + 22_000 * S
        mine = plat.historian.query_raw(acme.id, sids, lo, hi)
        theirs = src.query_raw(acme.id, sids, lo, hi)
        assert mine.num_rows == theirs.num_rows > 50_000
        assert mine.equals(theirs)
        temp = reg.get_signal(acme.id, "press-01/temp").id
        one = plat.historian.query_raw(acme.id, [temp], T0 + 7 * S, T0 + 8 * S)
        assert one.column("value").to_pylist() == [-1.5]
        # The verification's checksum notices a single changed value.
        before = _points_of(plat.historian, acme.id, sids)
        plat.historian.write(make_batch(acme.id, [temp], [T0 + 7 * S], [-1.25]))
        after = _points_of(plat.historian, acme.id, sids)
        assert after.points == before.points
        assert after.checksum != before.checksum
    finally:
        plat.close()
        src.close()


def test_a_non_empty_target_is_refused(source: Source) -> None:
    cluster = _pg()
    used = cluster.new_database("used")
    plat = Platform(Settings(data_dir=source.data.parent / "other", mqtt_mode="off",
                             registry_url=used, historian_url=used))  # fmt: skip
    try:
        plat.registry.create_tenant("squatter")
    finally:
        plat.close()
    code, out = _migrate(source.data, used, cluster.new_database("fresh"))
    assert code == 2, out
    assert "target registry is not empty: table 'tenants' holds 1 rows" in " ".join(out.split())
    # A historian holding points is refused too, before the registry is touched.
    hist = cluster.new_database("hist")
    plat = Platform(Settings(data_dir=source.data.parent / "other2", mqtt_mode="off",
                             historian_url=hist))  # fmt: skip
    try:
        plat.historian.write(make_batch(1, [1], [T0], [1.0]))
    finally:
        plat.close()
    reg = cluster.new_database("reg")
    code, out = _migrate(source.data, reg, hist)
    assert code == 2, out
    assert "target historian is not empty: it holds 1 points" in " ".join(out.split())
    code, out = _migrate(source.data, "sqlite:///x.db", hist)
    assert code == 2
    assert "--to-registry must be a PostgreSQL URL" in " ".join(out.split())


def test_a_running_platform_is_refused(source: Source, tmp_path: Path) -> None:
    """Another process holding the historian (as `shopfloor up` does) stops the migration."""
    cluster = _pg()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "sys.stdin.read()", str(source.data / "historian" / "historian.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        target = cluster.new_database("busy")
        code, out = _migrate(source.data, target, target)
    finally:
        holder.communicate("", timeout=30)
    assert code == 2, out
    assert "is in use by another process" in " ".join(out.split())
    assert "stop the platform" in " ".join(out.split())


def test_point_checksum_is_independent_of_batching() -> None:
    """The same points in other pages give the same sum; any changed field changes it."""
    rng = np.random.default_rng(7)
    n = 1000
    table = pa.table(
        {
            "signal_id": pa.array(rng.integers(1, 5, n), pa.int32()),
            "ts": pa.array(np.arange(n, dtype=np.int64) * S, pa.int64()),
            "value": pa.array([None if i % 10 == 0 else float(i) for i in range(n)], pa.float64()),
            "text": pa.array([f"t{i}" if i % 10 == 0 else None for i in range(n)], pa.string()),
            "quality": pa.array(np.zeros(n, dtype=np.uint32), pa.uint32()),
        }
    )
    whole, pieces = PointSum(), PointSum()
    whole.add(table)
    for start in range(0, n, 333):
        pieces.add(table.slice(start, 333))
    assert (whole.points, whole.checksum) == (pieces.points, pieces.checksum) == (n, whole.checksum)
    for column, value in [("value", 2.5), ("text", "other"), ("quality", BAD), ("ts", 5)]:
        i = 20 if column == "text" else 21
        changed = table.column(column).to_pylist()
        changed[i] = value
        tampered = table.set_column(
            table.schema.get_field_index(column), column, pa.array(changed, table[column].type)
        )
        other = PointSum()
        other.add(tampered)
        assert other.checksum != whole.checksum, column
    assert START < T0 < END
