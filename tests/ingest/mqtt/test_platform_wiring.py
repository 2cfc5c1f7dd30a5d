"""The platform starts its MQTT endpoint with the app and stops it with the app."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from tests.ingest.mqtt.conftest import Device, free_port, make_platform


def test_the_app_runs_the_mqtt_endpoint_for_its_life(tmp_path: Path) -> None:
    port = free_port()
    platform, acme, _, key = make_platform(tmp_path, mqtt_mode="embedded", mqtt_port=port)
    token = platform.credentials.issue_token(acme.id, "press-01")
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with TestClient(create_app(platform=platform)) as client:
            deadline = time.monotonic() + 10
            while not client.get("/api/v1/mqtt/stats", headers=headers).json()["running"]:
                assert time.monotonic() < deadline, "the MQTT endpoint did not start"
                time.sleep(0.05)
            dev = Device(port, token)
            try:
                assert asyncio.run(dev.connect()) == 0
                asyncio.run(dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 1.5}'))
                while (
                    client.get("/api/v1/mqtt/stats", headers=headers).json()["accepted_messages"]
                    < 1
                ):
                    assert time.monotonic() < deadline, "the message was not stored"
                    time.sleep(0.05)
            finally:
                dev.close()
        # stopped with the app: nothing listens there any more (closed connections may linger
        # in TIME_WAIT, which SO_REUSEADDR allows; a listening socket it does not)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        platform.close()
