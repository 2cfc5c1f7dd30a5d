"""`shopfloor edge check / status / estimate / browse`, through Typer's runner and a subprocess."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from typer.testing import CliRunner

from shopfloor.cli.edge import app
from shopfloor.edge.buffer import BufferStats, estimate_outage_s
from shopfloor.edge.config import ConnectorSection, load_edge_config
from shopfloor.edge.connector import Connector
from shopfloor.edge.model import Reading
from shopfloor.edge.runtime import Gateway
from tests.services import free_port

runner = CliRunner()

MODBUS = """\
name: hall-2
data_dir: data
buffer:
  max_bytes: 100MiB
  max_age: 2d
uplink:
  type: http
  url: http://127.0.0.1:{port}
  api_key: key
connectors:
  - type: modbus
    name: presses
    connections:
      - name: plc
        transport: tcp
        host: 127.0.0.1
        port: 5020
        devices:
          - name: press-01
            period_s: {period}
            points:
              - {{name: temp, table: holding, address: 0, type: float32}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_check_accepts_a_good_file_with_a_real_connector(tmp_path: Path) -> None:
    path = write(tmp_path, MODBUS.format(port=1, period=0.5))
    result = runner.invoke(app, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK, gateway 'hall-2'" in result.stdout
    assert "connector 'presses': modbus" in result.stdout
    assert "100.0 MiB" in result.stdout
    assert "max age 2.0 d" in result.stdout


def test_check_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, MODBUS.format(port=1, period=0))
    result = runner.invoke(app, ["check", "--config", str(path)])
    assert result.exit_code == 2
    assert (
        "edge.yaml:20: connectors[0].connections[0].devices[0].period_s: "
        "Input should be greater than 0" in result.output
    )


def test_the_edge_cli_does_not_load_the_platform(tmp_path: Path) -> None:
    """On a gateway box only shopfloor[edge] is installed: no fastapi, duckdb, sqlalchemy, pyarrow."""
    path = write(tmp_path, MODBUS.format(port=1, period=1))
    code = (
        "import sys\n"
        "from shopfloor.cli.main import app\n"
        "try:\n"
        "    app(['edge', 'check', '--config', sys.argv[1]])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('fastapi', 'duckdb', 'sqlalchemy', 'pyarrow') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "OK, gateway 'hall-2'" in out.stdout
    assert "HEAVY []" in out.stdout


class _Opts(BaseModel):
    pass


class OnePoll(Connector):
    """Hands over 50 readings of 4 points, then waits."""

    domain = "onepoll"
    config_model = _Opts

    async def run(self) -> None:
        for k in range(50):
            await self.sink(
                Reading.at(
                    "mixer-01", time.time_ns() - 60 * 10**9 + k, ("a", "b", "c", "d"), [k] * 4
                )
            )
        await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:
        return {
            "devices": {
                "mixer-01": {"connected": False, "failed_total": 3, "last_error": "timeout"}
            }
        }


def _run_gateway_briefly(tmp_path: Path) -> Path:
    """A real gateway whose platform is unreachable: its buffer fills, its status file says so."""
    text = (
        MODBUS.format(port=free_port(), period=1).split("connectors:")[0]
        + "status: {interval: 0.1}\n"
    )
    path = write(tmp_path, text)
    cfg = load_edge_config(path)
    section = ConnectorSection(type="onepoll", name="mixers")
    section._cls, section._config = OnePoll, _Opts()
    cfg.connectors = [section]

    async def go() -> None:
        gw = Gateway(cfg)
        task = asyncio.create_task(gw.run())
        deadline = time.monotonic() + 20

        def busy() -> bool:
            return gw.points_in < 200 or gw.send_failures < 1

        while busy() and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few status periods
        gw.request_stop()
        await asyncio.wait_for(task, 20)

    asyncio.run(go())
    return path


def test_status_and_estimate_of_a_gateway_in_an_outage(tmp_path: Path) -> None:
    path = _run_gateway_briefly(tmp_path)
    status_file = tmp_path / "data" / "status.json"
    doc = orjson.loads(status_file.read_bytes())
    assert doc["buffer"]["depth_points"] == 200
    assert doc["state"] == "stopped"

    result = runner.invoke(app, ["status", "--status-file", str(status_file)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "gateway hall-2 — stopped" in text
    assert "200 points" in text
    assert "not connected" in text
    assert "mixer-01" in text
    assert "failing" in text
    assert "timeout" in text

    result = runner.invoke(app, ["status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["buffer"]["depth_points"] == 200

    result = runner.invoke(app, ["estimate", "--config", str(path), "--rate", "1000"])
    assert result.exit_code == 0, result.output
    b = doc["buffer"]
    stats = BufferStats(**{k: v for k, v in b.items() if k != "bytes_per_point"})
    expected_s = estimate_outage_s(stats, 1000.0, b["bytes_per_point"])
    assert 120 < expected_s < 7200  # shown in minutes
    expected = f"{expected_s / 60:.1f} min"
    text = " ".join(result.stdout.split())
    assert f"at 1,000 points/s and {b['bytes_per_point']:.1f} bytes/point" in text
    assert f"covers an outage of {expected} (limited by disk" in text


def test_status_without_a_status_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--status-file", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert "no status file" in result.output
    path = write(tmp_path, MODBUS.format(port=1, period=1))
    result = runner.invoke(app, ["estimate", "--config", str(path)])
    assert result.exit_code == 1
    assert "give --rate" in result.output
    result = runner.invoke(app, ["estimate", "--config", str(path), "--rate", "0"])
    assert result.exit_code == 0
    assert "limited by max_age" in result.stdout


def test_browse_reports_an_unreachable_server(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["browse", f"opc.tcp://127.0.0.1:{free_port()}", "--out", str(tmp_path / "x.yaml")]
    )
    assert result.exit_code == 1
    assert "browsing opc.tcp://127.0.0.1:" in result.output
    assert "failed" in result.output
    assert not (tmp_path / "x.yaml").exists()
