"""Garbage, wrong types, oversized messages and floods are counted per device, and the ingest
loop keeps storing good messages afterwards."""

from __future__ import annotations

from typing import Any

import orjson

from shopfloor.ingest.mqtt import counters as c
from tests.ingest.mqtt.conftest import eventually, run

TOPIC = "sf/v1/acme/press-01/telemetry"


def test_bad_payloads_are_counted_and_ingest_goes_on(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory(mqtt_max_message_bytes=64 * 1024) as env:
            creds = env.platform.credentials
            dev = env.device(creds.issue_token(env.acme.id, "press-01"))
            assert await dev.connect() == 0
            await dev.publish(TOPIC, b'{"temp": 1.0}')
            await env.wait_values(env.acme, "press-01", "temp")
            await dev.publish(TOPIC, b"\x00\xff garbage")
            await dev.publish(TOPIC, b'{"temp": ')
            await dev.publish(TOPIC, b"[1, 2, 3]")
            await dev.publish(TOPIC, b'{"temp": "hot"}')  # a number signal sent text
            await dev.publish(TOPIC, b'{"temp": {"nested": 1}}')
            await dev.publish(TOPIC, b'{"other-device/temp": 1.0}')  # not via the topic
            await dev.publish(TOPIC, orjson.dumps({"device": "press-02", "points": []}))
            await dev.publish(TOPIC, b"x" * (10 * 1024 * 1024))
            await dev.publish(TOPIC, b'{"temp": 2.0}')
            assert await env.wait_values(env.acme, "press-01", "temp", 2) == [1.0, 2.0]
            counters = env.mqtt.counters
            await eventually(
                lambda: counters.count("acme", "press-01", c.TOO_LARGE) == 1, "the 10 MB count"
            )
            assert counters.count("acme", "press-01", c.MALFORMED) == 2
            assert counters.count("acme", "press-01", c.INVALID) == 5
            assert env.values(env.acme, "press-02", "temp") == []
            async with env.http() as http:
                stats = (await http.get("/api/v1/mqtt/stats")).json()
            reasons = {r["reason"]: r["count"] for r in stats["rejected"]}
            assert reasons == {c.MALFORMED: 2, c.INVALID: 5, c.TOO_LARGE: 1}
            assert all(r["device"] == "press-01" for r in stats["rejected"])

    run(scenario())


def test_a_flood_is_cut_per_device_and_others_go_on(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory(mqtt_device_rate=5.0) as env:
            creds = env.platform.credentials
            flood = env.device(creds.issue_token(env.acme.id, "press-01"))
            calm = env.device(creds.issue_token(env.acme.id, "press-02"))
            assert await flood.connect() == 0
            assert await calm.connect() == 0
            for i in range(60):
                flood.client.publish(
                    TOPIC, orjson.dumps({"ts": 1767225600000 + i, "values": {"n": i}}), qos=0
                )
            await flood.publish(TOPIC, b'{"last": 1}', qos=1)
            counters = env.mqtt.counters
            await eventually(lambda: counters.count("acme", "press-01", c.RATE) > 0, "rate limit")
            await calm.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 3.0}')
            assert await env.wait_values(env.acme, "press-02", "temp") == [3.0]

            # QoS 0 has no acknowledgement to wait for: each of the 60 is either stored or
            # counted as cut, once the platform has handled them all.
            def handled() -> bool:
                stored = len(env.values(env.acme, "press-01", "n"))
                return stored + counters.count("acme", "press-01", c.RATE) >= 60

            await eventually(handled, "all 60 messages stored or cut")
            assert len(env.values(env.acme, "press-01", "n")) < 60
            assert counters.count("acme", "press-02", c.RATE) == 0

    run(scenario())


def test_unknown_tenant_and_topic_are_counted(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            svc = env.mqtt
            # The broker would refuse these topics to a device; the counting is the platform's
            # defence behind it, so call its handler as the subscriber does.
            await svc.handle("sf/v1/nobody/press-01/telemetry", b'{"temp": 1}', 1)
            await svc.handle("sf/v1/acme/press-01/whatever", b"{}", 1)
            assert svc.counters.count("nobody", "press-01", c.UNKNOWN_TENANT) == 1
            assert svc.counters.count("?", "?", c.UNKNOWN_TOPIC) == 1

    run(scenario())
