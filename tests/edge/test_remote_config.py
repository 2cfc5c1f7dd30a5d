"""End to end: a real platform (uvicorn on a free port), a real Gateway with ``remote:`` pointed
at it, a real pymodbus server and a real asyncua server.

The platform's PUT of a Modbus device reaches the gateway within seconds, its points arrive in
the historian and the sync state turns in_sync; a config the gateway must refuse shows as a
sync error with its message while the running connectors keep delivering; a change restarts
only the changed connector; a browse request returns the OPC UA server's nodes; and a restart
without the platform comes up with the last applied configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.cli.edge import app as edge_cli
from shopfloor.core.config import Settings
from shopfloor.edge.config import EdgeConfig, parse_edge_config
from shopfloor.edge.connectors.modbus.simserver import SimServer
from shopfloor.edge.remote import SAVED_FILE
from shopfloor.edge.runtime import Gateway
from tests.edge.opcua.conftest import running_server
from tests.services import free_port

GW = "gw-1"


@dataclass
class Server:
    url: str
    key: str
    platform: Platform
    tenant_id: int

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
        )


@contextlib.asynccontextmanager
async def platform_server(data_dir: Path) -> AsyncIterator[Server]:
    platform = Platform(Settings(data_dir=data_dir))
    info, key = platform.registry.create_tenant("acme")
    platform.registry.create_device(info.id, GW)
    port = free_port()
    config = uvicorn.Config(
        create_app(platform=platform), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "the platform did not start"
        yield Server(f"http://127.0.0.1:{port}", key, platform, info.id)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        platform.close()


def edge_config(data_dir: Path, url: str, key: str, remote_url: str | None = None) -> EdgeConfig:
    remote: dict[str, Any] = {"poll_s": 2, "retry_s": 0.2, "timeout": 10}
    if remote_url is not None:
        remote["url"] = remote_url
    return parse_edge_config(
        {
            "name": GW,
            "data_dir": str(data_dir),
            "uplink": {"type": "http", "url": url, "api_key": key, "timeout": 3},
            "forwarder": {"retry_initial": 0.1, "retry_max": 0.5},
            "status": {"interval": 0.2},
            "remote": remote,
            # edge.yaml's own connector: it must run on untouched through every change
            "connectors": [
                {"type": "simulator", "name": "local-sim", "lines": 1, "machines": 1,
                 "period_s": 0.5},
            ],
        }
    )  # fmt: skip


def modbus(port: int, period_s: float = 0.1) -> dict[str, Any]:
    return {
        "type": "modbus",
        "name": "line1",
        "connections": [
            {
                "name": "plc",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": port,
                "connect_timeout_s": 1.0,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.4,
                "devices": [
                    {
                        "name": "press-7",
                        "unit_id": 1,
                        "period_s": period_s,
                        "timeout_s": 0.5,
                        "points": [{"name": "temp", "table": "holding", "address": 1}],
                    }
                ],
            }
        ],
    }


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s} s; last: {last!r}")


async def points(c: httpx.AsyncClient, signal: str) -> list[float]:
    r = await c.get("/points", params={"signal": signal, "start": "-1h", "end": "now"})
    if r.status_code != 200:
        return []
    series = r.json()["series"]
    return list(series[0]["value"]) if series else []


async def gateway_state(c: httpx.AsyncClient) -> dict[str, Any]:
    listed = (await c.get("/gateways")).json()
    return next((g for g in listed if g["name"] == GW), {})


async def put(c: httpx.AsyncClient, connectors: list[dict[str, Any]], expected: int) -> int:
    r = await c.put(
        f"/gateways/{GW}/config", json={"connectors": connectors, "expected_version": expected}
    )
    assert r.status_code == 200, r.text
    version: int = r.json()["version"]
    return version


def test_remote_configuration_end_to_end(tmp_path: Path) -> None:
    async def go() -> None:
        async with (
            SimServer([1]) as plc,
            platform_server(tmp_path / "platform") as srv,
            srv.client() as c,
        ):
            await plc.set_registers(1, 1, [215])
            gw = Gateway(edge_config(tmp_path / "edge", srv.url, srv.key), restart_initial_s=0.1)
            run = asyncio.create_task(gw.run())
            await asyncio.wait_for(gw.ready.wait(), 10)
            local = gw.slots[0]
            assert local.name == "local-sim"
            assert not local.remote
            state = await until(lambda: gateway_state(c), 15, "the gateway's first report")
            assert state["sync"] == "in_sync"
            assert state["applied_version"] == 0

            # 1. a Modbus device from the platform: picked up, points in the historian
            t0 = time.monotonic()
            v1 = await put(c, [modbus(plc.port)], 0)
            await until(lambda: points(c, "press-7/temp"), 10, "press-7's points")
            picked_up_s = time.monotonic() - t0

            async def synced() -> bool:
                st = await gateway_state(c)
                return st.get("sync") == "in_sync" and st.get("applied_version") == v1

            await until(synced, 10, "sync in_sync")
            assert 215.0 in await points(c, "press-7/temp")
            line1 = gw._by_name["line1"]
            assert line1.remote
            assert line1.running

            # 2. a config the gateway refuses (a name of edge.yaml's own): error, old connector
            # still delivering, the local one untouched
            clash = {"type": "simulator", "name": "local-sim", "lines": 1, "machines": 1}
            v2 = await put(c, [modbus(plc.port), clash], v1)

            async def refused() -> dict[str, Any] | None:
                st = await gateway_state(c)
                return st if st.get("sync") == "error" else None

            st = await until(refused, 10, "sync error")
            assert "local-sim" in st["error"]
            assert "edge.yaml" in st["error"]
            assert st["applied_version"] == v1
            assert st["desired_version"] == v2
            await plc.set_registers(1, 1, [230])
            await until(lambda: _has(c, "press-7/temp", 230.0), 10, "the old connector delivering")
            assert gw._by_name["line1"] is line1
            assert gw.slots[0] is local

            # 3. a change restarts only the changed connector
            v3 = await put(c, [modbus(plc.port, period_s=0.2)], v2)

            async def applied_v3() -> bool:
                st = await gateway_state(c)
                return st.get("applied_version") == v3 and st.get("sync") == "in_sync"

            await until(applied_v3, 10, "version 3 applied")
            assert gw._by_name["line1"] is not line1
            assert gw._by_name["line1"].config.connections[0].devices[0].period_s == 0.2
            assert local.restarts == 0
            assert gw.slots[0] is local
            assert local.running
            assert gw.remote.status()["sync"] == "in_sync"

            # 4. browse a real OPC UA server through the gateway
            with running_server("--devices", "2", "--per-device", "3", "--period", "1") as ua:
                r = await c.post(f"/gateways/{GW}/browse", json={"endpoint": ua.url})
                assert r.status_code == 202, r.text
                rid = r.json()["id"]

                async def browsed() -> dict[str, Any] | None:
                    doc = (await c.get(f"/gateways/{GW}/browse/{rid}")).json()
                    return doc if doc["state"] != "pending" else None

                doc = await until(browsed, 20, "the browse result")
            assert doc["state"] == "done", doc
            paths = {n["browse_path"] for n in doc["nodes"]}
            assert {"Plant/dev000/v0000", "Plant/dev001/v0002"} <= paths, sorted(paths)
            node = next(n for n in doc["nodes"] if n["browse_path"] == "Plant/dev000/v0000")
            assert node["name"] == "v0000"
            assert node["node_id"].startswith("ns=")

            gw.request_stop()
            await asyncio.wait_for(run, 20)
        saved = tmp_path / "edge" / SAVED_FILE
        assert saved.exists()
        shown = CliRunner().invoke(
            edge_cli, ["status", "--status-file", str(tmp_path / "edge" / "status.json")]
        )
        assert shown.exit_code == 0, shown.output
        assert f"version {v3}" in shown.output, shown.output
        assert "in_sync" in shown.output, shown.output
        print(f"\nremote config picked up and first points stored in {picked_up_s:.2f} s")

        # 5. a restart without the platform comes up with the last applied config
        async with SimServer([1]) as plc2:
            dead = f"http://127.0.0.1:{free_port()}"
            cfg = edge_config(tmp_path / "edge", dead, "k")
            doc = saved.read_text().replace(f'"port":{plc.port}', f'"port":{plc2.port}')
            saved.write_text(doc)  # the PLC's test server got a new port; the rest is as saved
            gw2 = Gateway(cfg, restart_initial_s=0.1)
            run2 = asyncio.create_task(gw2.run())
            await asyncio.wait_for(gw2.ready.wait(), 10)
            assert gw2.remote.applied_version == v3
            slot = gw2._by_name["line1"]
            assert slot.remote
            assert slot.config.connections[0].devices[0].period_s == 0.2
            await until(_async(lambda: slot.points_in > 0), 10, "the saved connector polling")
            gw2.request_stop()
            await asyncio.wait_for(run2, 20)

    asyncio.run(asyncio.wait_for(go(), 90))


def _async(f: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return f()

    return call


async def _has(c: httpx.AsyncClient, signal: str, value: float) -> bool:
    return value in await points(c, signal)


def test_remote_needs_a_url_when_the_uplink_is_not_http() -> None:
    from shopfloor.edge.config import EdgeConfigError

    with pytest.raises(EdgeConfigError, match=r"remote\.url: give url"):
        parse_edge_config(
            {
                "name": "g",
                "uplink": {"type": "sparkplug", "broker": "mqtt://127.0.0.1:1883",
                           "group_id": "g1"},
                "remote": {"enabled": True},
            }
        )  # fmt: skip
