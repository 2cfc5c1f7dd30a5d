"""Telemetry in every form, from a real device through the embedded broker into the historian."""

from __future__ import annotations

from typing import Any

import orjson

from tests.ingest.mqtt.conftest import run


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
