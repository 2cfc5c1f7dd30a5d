"""Telemetry in every form, from a real device through the embedded broker into the historian."""

from __future__ import annotations

from typing import Any

import orjson

from tests.ingest.mqtt.conftest import eventually, run


def test_every_telemetry_form_lands_in_the_historian(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            token = env.platform.credentials.issue_token(env.acme.id, "press-01")
            dev = env.device(token)
            assert await dev.connect() == 0
            topic = "sf/v1/acme/press-01/telemetry"
            # short form: server time
            await dev.publish(topic, orjson.dumps({"temp": 21.5, "state": "run"}))
            # one instant
            await dev.publish(topic, orjson.dumps({"ts": 1767225600000, "values": {"temp": 22.5}}))
            # the HTTP ingest bodies, the device taken from the topic
            frame = {"ts": [1767225601000, 1767225602000], "values": {"temp": [23.5, 24.5]}}
            await dev.publish(topic, orjson.dumps(frame))
            columns = {"signal": ["temp"], "ts": [1767225603000], "value": [25.5]}
            await dev.publish(topic, orjson.dumps(columns))
            rows = {"points": [{"signal": "temp", "ts": 1767225604000, "value": 26.5}]}
            await dev.publish(topic, orjson.dumps(rows))
            temps = await env.wait_values(env.acme, "press-01", "temp", 6)
            assert sorted(temps) == [21.5, 22.5, 23.5, 24.5, 25.5, 26.5]
            assert await env.wait_values(env.acme, "press-01", "state") == ["run"]
            assert env.values(env.acme, "press-02", "temp") == []
            stats = env.mqtt.stats()
            assert stats["accepted_messages"] == 5
            assert stats["rejected_messages"] == 0

    run(scenario())


def test_a_tenant_sees_only_its_own_mqtt_figures(env_factory: Any) -> None:
    """GET /api/v1/mqtt/stats counts the caller's tenant's messages only: another tenant's
    traffic and rejections do not show, neither as rows nor in the totals."""

    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            mine = env.device(creds.issue_token(env.acme.id, "press-01"))
            theirs = env.device(creds.issue_token(env.other.id, "press-01"))
            assert await mine.connect() == 0
            assert await theirs.connect() == 0
            await mine.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 1.5}')
            for _ in range(3):
                await theirs.publish("sf/v1/other/press-01/telemetry", b'{"temp": 2.5}')
            await theirs.publish("sf/v1/other/press-01/telemetry", b"not json")
            await env.wait_values(env.other, "press-01", "temp", 3)
            await env.wait_values(env.acme, "press-01", "temp")
            await eventually(
                lambda: env.mqtt.stats()["rejected_messages"] == 1, "the other tenant's reject"
            )
            async with env.http() as http:
                stats = (await http.get("/api/v1/mqtt/stats")).json()
            assert stats["accepted_messages"] == 1
            assert stats["rejected_messages"] == 0
            assert stats["rejected"] == []
            assert "sparkplug_messages" not in stats
            total = env.mqtt.stats()  # the operator's view has everyone
            assert total["accepted_messages"] == 4
            assert total["rejected_messages"] == 1

    run(scenario())
