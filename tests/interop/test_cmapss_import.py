"""C-MAPSS files into the historian (`shopfloor import --format cmapss`)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from shopfloor.api.platform import Platform
from shopfloor.cli.main import app
from shopfloor.core.config import Settings
from shopfloor.core.timeutil import parse_instant

runner = CliRunner()
DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cmapss"
HOUR = 3600 * 10**9


def _line(unit: int, cycle: int, sensor: float) -> str:
    settings = "0.0 0.0 100.0"
    sensors = " ".join(f"{sensor + i:.2f}" for i in range(21))
    return f"{unit} {cycle} {settings} {sensors}"


def test_import_writes_one_device_per_unit_with_the_failure_marker(tmp_path: Path) -> None:
    text = [_line(1, c, 500.0 + c) for c in range(1, 6)] + [_line(2, c, 600.0) for c in (1, 2, 3)]
    path = tmp_path / "train_FD009.txt"
    path.write_text("\n".join(text) + "\n")
    data = tmp_path / "data"
    assert runner.invoke(app, ["tenant", "create", "acme", "-d", str(data)]).exit_code == 0
    args = ["import", str(path), "--format", "cmapss", "--tenant", "acme", "-d", str(data)]
    r = runner.invoke(app, [*args, "--start", "2026-01-01T00:00:00Z", "--cycle", "1h"])
    assert r.exit_code == 0, r.output
    assert "2 units (2 run to failure), 204 points" in r.output  # (5+3) x (24+1) + 2 x 2
    plat = Platform(Settings(data_dir=data, mqtt_mode="off"))
    try:
        t = plat.registry.get_tenant("acme")
        assert sorted(d.name for d in plat.registry.list_devices(t.id)) == ["engine-1", "engine-2"]
        sig = {s.key: s.id for s in plat.registry.list_signals(t.id)}
        t0 = parse_instant("2026-01-01T00:00:00Z", "start", 0)
        s3 = plat.historian.query_raw(t.id, [sig["engine-1/sensor_3"]], 0, 2**62)
        assert s3.column("ts").to_pylist() == [t0 + i * HOUR for i in range(5)]
        assert s3.column("value").to_pylist() == [500.0 + c + 2 for c in range(1, 6)]
        marker = plat.historian.query_raw(t.id, [sig["engine-2/failed"]], 0, 2**62)
        assert marker.column("value").to_pylist() == [0.0, 0.0, 0.0, 1.0, 1.0]
        assert marker.column("ts").to_pylist() == [t0 + i * HOUR for i in range(5)]
    finally:
        plat.close()
    bad = tmp_path / "train_bad.txt"
    bad.write_text(_line(1, 1, 1.0) + "\n1 2 x\n")
    r = runner.invoke(
        app, ["import", str(bad), "--format", "cmapss", "-t", "acme", "-d", str(data)]
    )
    assert r.exit_code != 0
    assert "line 2" in r.output
