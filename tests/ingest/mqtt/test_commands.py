"""Commands round trip: API call -> MQTT command -> device (paho) -> response -> API answer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

from tests.ingest.mqtt.conftest import run


def test_command_round_trip_through_the_api(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            dev = env.device(env.platform.credentials.issue_token(env.acme.id, "press-01"))
            assert await dev.connect() == 0
            assert await dev.subscribe("sf/v1/acme/press-01/commands/+") == [1]
            seen: list[Any] = []
            answered = threading.Event()

            def answer(_c: Any, _u: Any, msg: Any) -> None:
                if msg.topic.endswith("/response") or "/commands/" not in msg.topic:
                    return
                body = orjson.loads(msg.payload)
                seen.append(body)
                reply = {"ok": True, "value": body["value"] * 2, "message": "done"}
                dev.client.publish(msg.topic + "/response", orjson.dumps(reply), qos=1)
                answered.set()

            dev.client.on_message = answer
            async with env.http() as http:
                r = await http.post(
                    "/api/v1/devices/press-01/commands", json={"signal": "setpoint", "value": 21}
                )
                assert r.status_code == 200, r.text
                out = r.json()
                assert out["ok"] is True
                assert out["value"] == 42
                assert out["message"] == "done"
                assert seen == [{"signal": "setpoint", "value": 21}]
                # No answer: the call gives up with 504 after its timeout.
                dev.client.on_message = None
                r = await http.post(
                    "/api/v1/devices/press-01/commands",
                    json={"method": "reboot", "params": {}, "timeout_s": 0.3},
                )
                assert r.status_code == 504, r.text
                assert "did not answer" in r.json()["error"]["message"]
                r = await http.post("/api/v1/devices/nope/commands", json={"method": "x"})
                assert r.status_code == 404
                r = await http.post(
                    "/api/v1/devices/press-01/commands", json={"signal": "a", "method": "b"}
                )
                assert r.status_code == 422
            await asyncio.sleep(0)

    run(scenario())
