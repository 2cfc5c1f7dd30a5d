"""Zero-touch provisioning over MQTT on the embedded broker: a device logs in with a tenant's
provisioning key, asks for its credential on its own topic, and then logs in with it."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import orjson

from tests.ingest.mqtt.conftest import run

SUBACK_FAILURE = 0x80


async def next_message(dev: Any, within_s: float = 10.0) -> tuple[str, dict[str, Any]]:
    while True:
        topic, payload, retained = await asyncio.to_thread(dev.messages.get, True, within_s)
        # amqtt hands every new subscriber the retained host STATE (public, and not an
        # answer): it is not what this test waits for
        if not (retained and topic.startswith("spBv1.0/STATE/")):
            return topic, orjson.loads(payload)


def test_a_device_provisions_itself_over_mqtt(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            key = creds.create_provisioning_key(env.acme.id, "line-1", max_devices=1)
            # wrong keys are refused at login
            assert await env.device("provision", "sfp_wrong").connect() != 0
            boot = env.device("provision", key, client_id="boot-7")
            assert await boot.connect() == 0
            # the provisioning login may use its own two topics and nothing else
            assert await boot.subscribe("sf/v1/provision/boot-8/response") == [SUBACK_FAILURE]
            assert await boot.subscribe("sf/v1/acme/press-01/commands/+") == [SUBACK_FAILURE]
            assert await boot.subscribe("sf/v1/provision/boot-7/response") == [1]
            await boot.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 1.0}')  # dropped
            req = orjson.dumps({"device": "sensor-9", "credential": "token"})
            await boot.publish("sf/v1/provision/boot-7/request", req)
            topic, answer = await next_message(boot)
            assert topic == "sf/v1/provision/boot-7/response"
            assert answer["ok"] is True
            assert (answer["tenant"], answer["device"], answer["created"]) == (
                "acme",
                "sensor-9",
                True,
            )
            # the new credential works at once, for its own device
            dev = env.device(answer["token"])
            assert await dev.connect() == 0
            await dev.publish("sf/v1/acme/sensor-9/telemetry", b'{"temp": 7.5}')
            assert await env.wait_values(env.acme, "sensor-9", "temp") == [7.5]
            assert env.values(env.acme, "press-01", "temp") == []
            # the key allowed one device: a second request is answered with the reason
            await boot.publish(
                "sf/v1/provision/boot-7/request", orjson.dumps({"device": "sensor-10"})
            )
            _, again = await next_message(boot)
            assert again["ok"] is False
            assert "used up" in again["error"]
            names = {d.name for d in env.platform.registry.list_devices(env.acme.id)}
            assert "sensor-10" not in names
            left = []
            while True:
                try:
                    left.append(boot.messages.get_nowait()[0])
                except queue.Empty:
                    break
            assert [t for t in left if not t.startswith("spBv1.0/STATE/")] == []

    run(scenario())
