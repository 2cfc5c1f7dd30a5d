"""The ingest-mqtt benchmark keeps working: its publishers speak MQTT correctly, and a tiny run
ends with one JSON object in which every message sent was stored.

Speed itself is measured by running the benchmark (benchmarks/README.md), never asserted here.
Without Mosquitto the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from benchmarks.ingest_mqtt import MOSQUITTO, Mosquitto, Plan, _remaining_length, publish_all
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    require(f"Mosquitto ({MOSQUITTO})", MOSQUITTO.exists())
    b = Mosquitto(tmp_path / "broker")
    yield b
    b.stop()


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
    ],
)
def test_remaining_length_is_the_mqtt_variable_byte_integer(n: int, encoded: bytes) -> None:
    assert _remaining_length(n) == encoded


def test_plan_sends_every_point_once() -> None:
    plan = Plan("frame", devices=3, messages=10, publishers=2, base_ms=1_700_000_000_000)
    seen: set[tuple[str, str, int]] = set()
    for p in range(plan.publishers):
        for topic, payload in plan.messages_of(p):
            device = topic.decode().split("/")[3]
            doc = json.loads(payload)
            for name, values in doc["values"].items():
                assert len(values) == len(doc["ts"])
                seen.update((device, name, ts) for ts in doc["ts"])
    assert len(seen) == plan.points == 1000
    start, end = plan.frame_range_ns()
    assert all(start <= ts * 1_000_000 < end for _, _, ts in seen)


def test_raw_publisher_delivers_exact_messages_at_qos1(broker: Mosquitto) -> None:
    got: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-test-sub")
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload), m.qos))
    client.connect("127.0.0.1", broker.port)
    client.subscribe("sf/v1/+/+/telemetry", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10), "test subscriber got no SUBACK"
        plan = Plan("single", devices=2, messages=70_000, publishers=1, base_ms=0)
        sent = plan.messages_of(0)  # more than 65,535: packet ids wrap around
        publish_all(broker.port, "bench-test-pub", sent, window=500)
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert [(t.decode(), p, 1) for t, p in sent] == got


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str, Path]:
    """One tiny run for the tests below: (exit status, the JSON line, stderr, work folder)."""
    require(f"Mosquitto ({MOSQUITTO})", MOSQUITTO.exists())
    work = tmp_path_factory.mktemp("ingest-mqtt")
    args = ["--quick", "--messages", "200", "--single-messages", "400", "--devices", "8"]
    args += ["--publishers", "2", "--data-dir", str(work)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest_mqtt", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = out.stdout.strip().splitlines()
    assert lines, f"no JSON line; stderr: {out.stderr[-3000:]}"
    return out.returncode, json.loads(lines[-1]), out.stderr, work


def test_tiny_run_stores_every_frame_point(tiny_run: tuple[int, dict[str, Any], str, Path]) -> None:
    _rc, result, stderr, work = tiny_run
    assert result["platform"] == "ok", stderr[-3000:]
    assert result["points"] == result["distinct_points_stored"] == 20_000
    assert result["non_stored"] == 0
    assert result["rejected_messages"] == 0
    for key in (
        "points_per_s",
        "broker_ceiling_points_per_s",
        "ratio",
        "single_point_msgs_per_s",
        "single_point_broker_ceiling_msgs_per_s",
    ):
        assert result[key] > 0, key
    assert not list(work.iterdir()), "the work folder was not removed"


def test_tiny_run_stores_every_single_point(
    tiny_run: tuple[int, dict[str, Any], str, Path],
) -> None:
    rc, result, stderr, _work = tiny_run
    assert result["single_point_non_stored"] == 0, result.get("failed")
    assert rc == 0, stderr[-3000:]
