"""Rules in their own processes: one api, one ingest and two `--role rules` processes (partitions
0/2 and 1/2) on one Mosquitto and one PostgreSQL database. Telemetry over MQTT and over the API
process's HTTP ingest reaches the rules processes through the broker (rules/bus.py); each
device's alarm is raised once, by the process owning the device, stored, and shown live on the
API process's WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopfloor.rules.runtime import Partition
from tests.historian import postgres_service
from tests.scaleout.cluster import Role
from tests.services import MOSQUITTO, Mosquitto, require

MQTT_DEVICES = [f"press-{i:02d}" for i in range(6)]
HTTP_DEVICE = "press-http"


@pytest.fixture
def database() -> str:
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    return postgres_service.shared_cluster().new_database("rulesrole")


def _wait(check: Any, what: str, timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_rules_processes_split_the_devices_and_alarms_reach_the_api_process(
    tmp_path: Path, database: str
) -> None:
    require("Mosquitto", MOSQUITTO.exists())
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from shopfloor.registry.service import Registry, SignalSpec
    from shopfloor.rules.store import RuleStore

    registry = Registry(database)
    registry.upgrade()
    tenant, key = registry.create_tenant("acme")
    registry.create_device_type(tenant.id, "press", [SignalSpec("temp")])
    for d in [*MQTT_DEVICES, HTTP_DEVICE]:
        registry.create_device(tenant.id, d, "press")
    # The on-delay needs two readings over the limit, 2 s apart and in two messages: a rules
    # process that saw only some of a device's batches would never raise it.
    RuleStore(registry).create(
        tenant.id, "hot", "threshold", {"signal": "temp", "limit": 80.0, "on_delay": 2.0},
        device_type="press",
    )  # fmt: skip
    registry.close()

    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    common = {
        "registry_url": database,
        "historian_url": database,
        "mqtt_mode": "external",
        "mqtt_url": f"mqtt://127.0.0.1:{broker.port}",
    }
    api = Role(tmp_path / "api", "api", common)
    ingest = Role(tmp_path / "ingest", "ingest", common)
    rules = [
        Role(tmp_path / f"rules-{i}", "rules", {**common, "rules_partition": f"{i}/2"})
        for i in range(2)
    ]
    live: list[dict[str, Any]] = []
    try:
        for r in (api, ingest, *rules):
            r.start()
        api.wait_ready("/health")
        for r in (ingest, *rules):
            _wait(lambda r=r: r.wait_ready()["status"] == "ok", f"{r.role} ready")
        time.sleep(0.5)  # the internal subscriptions are in place

        expected = len(MQTT_DEVICES) + 1

        async def listen(stop: asyncio.Event, enough: asyncio.Event) -> None:
            import websockets

            url = f"ws://127.0.0.1:{api.port}/api/v1/alarms/live"
            async with websockets.connect(url, additional_headers={"X-API-Key": key}) as ws:
                while not stop.is_set():
                    try:
                        live.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2)))
                        if len(live) >= expected:
                            enough.set()
                    except TimeoutError:
                        continue

        async def scenario() -> None:
            stop, enough = asyncio.Event(), asyncio.Event()
            listener = asyncio.create_task(listen(stop, enough))
            await asyncio.sleep(0.5)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gateway-1")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            t0 = int(time.time() * 1000) - 10_000
            async with httpx.AsyncClient(base_url=api.base) as http:
                for step in range(3):
                    ts = t0 + step * 1000
                    for d in MQTT_DEVICES:
                        body = json.dumps({"ts": ts, "values": {"temp": 95.0}})
                        client.publish(f"sf/v1/acme/{d}/telemetry", body, qos=1).wait_for_publish(5)
                    doc = {
                        "device": HTTP_DEVICE,
                        "points": [{"signal": "temp", "ts": ts, "value": 95.0}],
                    }
                    r = await http.post("/api/v1/ingest", json=doc, headers={"X-API-Key": key})
                    assert r.status_code == 200, r.text
            client.loop_stop()
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), 60)
            await asyncio.sleep(1.0)  # a second alarm for a device would arrive by now
            stop.set()
            await listener

        asyncio.run(asyncio.wait_for(scenario(), 120))
        devices = [m["device"] for m in live if m.get("type") == "alarm"]
        assert sorted(devices) == sorted([*MQTT_DEVICES, HTTP_DEVICE])  # each once
        assert {m["to_state"] for m in live} == {"unack_active"}
        stored = api.get("/api/v1/alarms", key)["alarms"]
        assert sorted(a["device"] for a in stored) == sorted([*MQTT_DEVICES, HTTP_DEVICE])
        # Each rules process evaluated only its own devices, and both had some.
        received = [r.get("/api/v1/health")["bus"] for r in rules]
        assert all(b["received"] > 0 for b in received), received
        owners = {d: [i for i in range(2) if Partition(i, 2).owns(d)] for d in devices}
        assert {len(o) for o in owners.values()} == {1}
        assert len({o[0] for o in owners.values()}) == 2
    finally:
        for r in (api, ingest, *rules):
            r.stop()
        broker.stop()
