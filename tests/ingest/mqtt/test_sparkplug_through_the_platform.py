"""Sparkplug B end to end: our edge node logs in to the platform's embedded broker with its own
token, and its births and data go through the MQTT service and the host into the historian;
the same token cannot speak for another edge node."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from shopfloor.edge.model import Reading
from shopfloor.edge.uplinks.sparkplug import SparkplugUplink, SparkplugUplinkConfig
from tests.ingest.mqtt.conftest import eventually, run


def uplink(port: int, token: str, node: str) -> SparkplugUplink:
    return SparkplugUplink(
        SparkplugUplinkConfig(
            host="127.0.0.1",
            port=port,
            username=token,
            group_id="acme",  # a tenant's own name is its Sparkplug group
            edge_node_id=node,
            connect_timeout_s=5,
            publish_timeout_s=5,
        )
    )


def test_edge_node_through_embedded_broker_into_the_historian(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            env.platform.registry.create_device(env.acme.id, "gw1")
            token = creds.issue_token(env.acme.id, "gw1")
            creds.set_sparkplug_node(env.acme.id, "gw1", "acme", "gw1")
            node = uplink(env.port, token, "gw1")
            await node.start()
            try:
                await eventually(lambda: node.connected, "the edge node connected")
                t0 = time.time_ns() // 1_000_000 * 1_000_000  # Sparkplug carries milliseconds
                for k in range(3):
                    r = Reading.at(
                        "press1", t0 + k * 1_000_000_000, ("temp", "rpm"), [20.5 + k, 1450]
                    )
                    await node.send([r], historical=False)
                temps = await env.wait_values(env.acme, "gw1.press1", "temp", 3)
                assert temps == [20.5, 21.5, 22.5]
                assert await env.wait_values(env.acme, "gw1.press1", "rpm", 3) == [1450.0] * 3
                status = env.mqtt.sparkplug.status() if env.mqtt.sparkplug else {}
                assert "gw1" in str(status)
            finally:
                await node.stop()

            # The token of gw1 speaking as edge node gw2: the broker drops its messages, so the
            # host never sees a birth of gw2 (it would register the device gw2).
            impostor = uplink(env.port, token, "gw2")
            await impostor.start()
            try:
                await asyncio.sleep(1.0)
                if impostor.connected:
                    r = Reading.at("press9", time.time_ns(), ("temp",), [99.0])
                    # refused or never acknowledged: either way the data stays out
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(impostor.send([r], historical=False), 6)
                await asyncio.sleep(1.0)
                names = {d.name for d in env.platform.registry.list_devices(env.acme.id)}
                assert not any(n.startswith("gw2") for n in names), names
            finally:
                await impostor.stop()

    run(scenario(), timeout=90)
