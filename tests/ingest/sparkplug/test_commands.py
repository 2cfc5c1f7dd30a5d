"""Setpoint writes through the edge, end to end, confirmed by read-back.

POST /api/v1/devices/{device}/commands -> the platform's Sparkplug host -> DCMD on a real
Mosquitto -> a real edge gateway (Modbus connector, Sparkplug uplink) -> a real pymodbus server;
the gateway reads the register back and answers with a DDATA, which the host matches to the
write. The platform runs its MQTT service in external mode against that Mosquitto; the HTTP
calls go through the real FastAPI app with users' API tokens.

Without Mosquitto the test skips locally and fails under CI=true (the broker fixture).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.sparkplug import payload as spb
from shopfloor.edge.config import parse_edge_config
from shopfloor.edge.connectors.modbus.simserver import SimServer
from shopfloor.edge.runtime import Gateway
from shopfloor.ingest.sparkplug import SparkplugHost
from shopfloor.security.roles import Role
from tests.edge.modbus.helpers import device, tcp
from tests.edge.sparkplug.helpers import Broker
from tests.edge.sparkplug_gateway_helpers import GROUP, NODE, edge_doc

from .helpers import Publisher

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct-horse-battery-9"  # meets the default password policy (tests/security)
BOILER = f"{NODE}.boiler-01"  # the registry name of the gateway's device


def token_headers(platform: Platform, tenant_id: int, role: Role, name: str) -> dict[str, str]:
    """A new user holding ``role`` in the tenant and the headers of an API token of theirs
    (as tests/security/conftest.py's user_headers)."""
    user = platform.auth.create_user(tenant_id, name, PASSWORD, [(role, None)])
    _, token = platform.auth.issue_token(user.id, "tests", None)
    return {"Authorization": f"Bearer {token}"}


async def until(cond: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def silent_node_births(port: int) -> None:
    """NBIRTH and DBIRTH of an edge node nobody runs: its device never answers a DCMD."""
    pub = Publisher(port, "silent")
    try:
        ts = int(time.time() * 1000)
        nbirth = [spb.MetricValue("bdSeq", None, spb.UINT64, 0, ts)]
        pub.send(f"spBv1.0/{GROUP}/NBIRTH/gw-silent", spb.encode(ts, 0, nbirth))
        dbirth = [spb.MetricValue("setpoint", 1, spb.DOUBLE, 20.0, ts)]
        pub.send(f"spBv1.0/{GROUP}/DBIRTH/gw-silent/valve-01", spb.encode(ts, 1, dbirth))
    finally:
        pub.close()


def silent_device_death(port: int) -> None:
    pub = Publisher(port, "silent-death")
    try:
        ts = int(time.time() * 1000)
        pub.send(f"spBv1.0/{GROUP}/DDEATH/gw-silent/valve-01", spb.encode(ts, 2, []))
    finally:
        pub.close()


def test_setpoint_written_through_the_edge_and_confirmed_by_read_back(
    broker: Broker, tmp_path: Path
) -> None:
    """An operator's write of 42 to a holding register returns ok with read_back 42 and the
    pymodbus server holds 42. A viewer gets 403 and writes nothing; an unknown signal is a 404
    naming the signals there are; a value the metric cannot carry is a 422; a read-only (input)
    register comes back ok=false with the gateway's reason and nothing written; a device that
    never answers gives 504 within the request's timeout, and 409 once it is dead."""
    points = [
        {"name": "temp", "table": "input", "address": 0, "type": "int16"},
        {"name": "setpoint", "table": "holding", "address": 10, "type": "int16"},
    ]

    async def scenario() -> None:
        settings = Settings(
            data_dir=tmp_path / "data",
            mqtt_mode="external",
            mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
            commit_interval_ms=2.0,
        )
        platform = Platform(settings)
        tenant, _ = platform.registry.create_tenant(GROUP)  # the group's tenant, by name
        operator = token_headers(platform, tenant.id, Role.OPERATOR, "op")
        viewer = token_headers(platform, tenant.id, Role.VIEWER, "view")
        assert platform.mqtt is not None
        await platform.mqtt.start()
        host = platform.mqtt.sparkplug
        assert isinstance(host, SparkplugHost)
        app = create_app(platform=platform)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        try:
            async with SimServer([1]) as server:
                await server.set_registers(1, 0, [215], "input")
                await server.set_registers(1, 10, [200])
                boiler = device("boiler-01", points, period_s=0.25)
                modbus = {
                    "type": "modbus",
                    "name": "mb",
                    "connections": [tcp("plc", server.port, [boiler])],
                }
                cfg = parse_edge_config(edge_doc(tmp_path, broker.port, [modbus]))
                gw = Gateway(cfg)
                task = asyncio.create_task(gw.run())
                try:
                    await asyncio.wait_for(gw.ready.wait(), 10)

                    def born() -> bool:
                        if not host.knows(tenant.id, BOILER):
                            return False
                        signals = platform.registry.list_signals(tenant.id, BOILER)
                        return "setpoint" in {s.name for s in signals}

                    await until(born, 15, "the DBIRTH of boiler-01 at the host")
                    url = f"/api/v1/devices/{BOILER}/commands"

                    # the acceptance: written, read back, in the register
                    body: dict[str, Any] = {"signal": "setpoint", "value": 42, "timeout_s": 5}
                    r = await http.post(url, json=body, headers=operator)
                    assert r.status_code == 200, r.text
                    out = r.json()
                    assert out["ok"] is True, out
                    assert out["read_back"] == 42
                    assert out["value"] == 42
                    assert out["matches"] is True
                    assert out["via"] == "sparkplug"
                    assert await server.registers(1, 10, 1) == [42]

                    # a viewer may not send commands
                    r = await http.post(url, json={**body, "value": 7}, headers=viewer)
                    assert r.status_code == 403, r.text

                    # an unknown signal: 404 naming the device's signals
                    r = await http.post(url, json={**body, "signal": "nope"}, headers=operator)
                    assert r.status_code == 404, r.text
                    assert "nope" in r.text
                    assert "setpoint" in r.text

                    # a value the metric's datatype cannot carry
                    r = await http.post(url, json={**body, "value": "high"}, headers=operator)
                    assert r.status_code == 422, r.text
                    assert "takes a number" in r.text

                    # a read-only register: refused by the gateway, with its reason
                    r = await http.post(
                        url, json={"signal": "temp", "value": 99, "timeout_s": 5}, headers=operator
                    )
                    assert r.status_code == 200, r.text
                    out = r.json()
                    assert out["ok"] is False, out
                    assert out["read_back"] is None
                    assert out["matches"] is False
                    assert "read-only" in out["message"]
                    assert await server.registers(1, 0, 1, "input") == [215]
                    assert await server.registers(1, 10, 1) == [42]  # the viewer wrote nothing

                    # a device that never answers: 504 within the timeout
                    await asyncio.to_thread(silent_node_births, broker.port)
                    await until(
                        lambda: host.knows(tenant.id, "gw-silent.valve-01"), 10, "silent births"
                    )
                    silent = "/api/v1/devices/gw-silent.valve-01/commands"
                    started = time.monotonic()
                    r = await http.post(
                        silent,
                        json={"signal": "setpoint", "value": 1.5, "timeout_s": 1.0},
                        headers=operator,
                    )
                    took = time.monotonic() - started
                    assert r.status_code == 504, r.text
                    assert "did not answer" in r.text
                    assert 1.0 <= took < 3.0
                    assert host.status()["writes"] == {"sent": 3, "answered": 2}

                    # once the device is dead: 409, nothing sent
                    await asyncio.to_thread(silent_device_death, broker.port)

                    def dead() -> bool:
                        node = host.status()["nodes"]["plant1/gw-silent"]
                        return node["devices"]["valve-01"]["online"] is False

                    await until(dead, 10, "the DDEATH of valve-01")
                    r = await http.post(
                        silent, json={"signal": "setpoint", "value": 2.0}, headers=operator
                    )
                    assert r.status_code == 409, r.text
                    assert "offline" in r.text
                    assert host.status()["writes"]["sent"] == 3
                finally:
                    gw.request_stop()
                    await asyncio.wait_for(task, 20)
        finally:
            await http.aclose()
            await platform.mqtt.stop()
            platform.close()

    asyncio.run(scenario())


def test_an_answer_is_matched_to_its_own_command_not_to_a_poll(
    broker: Broker, tmp_path: Path
) -> None:
    """An edge node that echoes the command's timestamp in its answers ("Command" property,
    as this project's gateway does): a poll or subscription update of the same metric that
    arrives while a write waits is not taken for the answer, nor is a late answer to an earlier
    command. (Under load a data-change DDATA of the previous write was once taken for the next
    write's answer.)"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    async def scenario() -> None:
        settings = Settings(
            data_dir=tmp_path / "data",
            mqtt_mode="external",
            mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
        )
        platform = Platform(settings)
        tenant, _ = platform.registry.create_tenant(GROUP)
        assert platform.mqtt is not None
        await platform.mqtt.start()
        host = platform.mqtt.sparkplug
        assert isinstance(host, SparkplugHost)
        commands: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_dcmd(_c: Any, _u: Any, msg: Any) -> None:
            (metric,) = spb.decode(msg.payload).metrics
            loop.call_soon_threadsafe(commands.put_nowait, int(metric.timestamp))

        sniffer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dcmd-sniffer")
        sniffer.on_message = on_dcmd
        sniffer.connect("127.0.0.1", broker.port)
        sniffer.subscribe(f"spBv1.0/{GROUP}/DCMD/gw-echo/#", qos=1)
        sniffer.loop_start()
        pub = Publisher(broker.port, "gw-echo")
        seq = iter(range(256))
        topic = f"spBv1.0/{GROUP}/DDATA/gw-echo/valve-01"

        def ddata(value: float, command: int | None) -> None:
            ts = int(time.time() * 1000)
            m = spb.MetricValue(None, 1, spb.DOUBLE, value, ts, command_ts=command)
            pub.send(topic, spb.encode(ts, next(seq), [m]))

        try:
            ts = int(time.time() * 1000)
            nbirth = [spb.MetricValue("bdSeq", None, spb.UINT64, 0, ts)]
            pub.send(f"spBv1.0/{GROUP}/NBIRTH/gw-echo", spb.encode(ts, next(seq), nbirth))
            dbirth = [spb.MetricValue("setpoint", 1, spb.DOUBLE, 20.0, ts)]
            pub.send(f"spBv1.0/{GROUP}/DBIRTH/gw-echo/valve-01", spb.encode(ts, next(seq), dbirth))
            await until(lambda: host.knows(tenant.id, "gw-echo.valve-01"), 10, "the births")
            await asyncio.sleep(0.3)  # the sniffer's subscription is in place

            first = asyncio.create_task(
                host.write(tenant.id, "gw-echo.valve-01", "setpoint", 1.0, 5)
            )
            t1 = await asyncio.wait_for(commands.get(), 5)
            await asyncio.to_thread(ddata, 1.0, t1)  # the echoed answer
            r1 = await first
            assert (r1.ok, r1.read_back) == (True, 1.0)

            second = asyncio.create_task(
                host.write(tenant.id, "gw-echo.valve-01", "setpoint", 2.0, 5)
            )
            t2 = await asyncio.wait_for(commands.get(), 5)
            assert t2 != t1
            await asyncio.to_thread(ddata, 99.0, None)  # a poll of the metric: not the answer
            await asyncio.to_thread(ddata, 1.0, t1)  # a late echo of the first: not it either
            await asyncio.sleep(0.3)
            assert not second.done()
            await asyncio.to_thread(ddata, 2.0, t2)
            r2 = await second
            assert (r2.ok, r2.read_back, r2.matches) == (True, 2.0, True)
        finally:
            pub.close()
            sniffer.loop_stop()
            sniffer.disconnect()
            await platform.mqtt.stop()
            platform.close()

    asyncio.run(scenario())
