"""Issue 9's acceptance test: two ingest workers and one API process on one Mosquitto and one
PostgreSQL database; one worker is SIGKILLed mid-stream. Every point the broker acknowledged
to its publisher is stored, no (signal, timestamp) is stored twice, and the API process's
latest values follow what the workers wrote.

What Mosquitto 2.0 does with the dead worker's share of the stream (checked here, see
docs/scale-out.md): the messages it had sent to the killed session and not had acknowledged
stay with that session, and so do new messages the share group assigns to it while it is
away; none goes to the surviving member. They are delivered when a worker logs in again under
the same client id, which a restarted worker does (its id is kept in its data folder).
"""

from __future__ import annotations

import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.historian import postgres_service
from tests.scaleout.cluster import Role
from tests.services import MOSQUITTO, Mosquitto, require

DEVICES = 4
MESSAGES = 100  # per device
SIGNALS = 5
STEPS = 10  # timestamps per message: 5 signals x 10 = 50 points a message
POINTS = DEVICES * MESSAGES * SIGNALS * STEPS
T0_MS = (int(time.time()) - 3600) * 1000  # an hour ago: inside every default window
PACE_S = 0.01  # between one device's messages: the stream lasts about a second


def _value(device: int, msg: int, step: int, sig: int) -> float:
    """Each point's value is its sequence number (distinct across the whole stream)."""
    return float(device * 1_000_000 + (msg * STEPS + step) * SIGNALS + sig)


def _ts_ms(msg: int, step: int) -> int:
    return T0_MS + msg * STEPS + step


def _message(device: int, msg: int) -> bytes:
    return orjson.dumps(
        {
            "ts": [_ts_ms(msg, s) for s in range(STEPS)],
            "values": {
                f"s{k}": [_value(device, msg, s, k) for s in range(STEPS)] for k in range(SIGNALS)
            },
        }
    )


class Publisher(threading.Thread):
    """One device: numbered QoS 1 messages; records the messages whose PUBACK arrived."""

    def __init__(self, port: int, device: int) -> None:
        super().__init__(daemon=True)
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.device = device
        self.sent = 0
        self.mids: dict[int, int] = {}
        self.acked_mids: set[int] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device}")
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            self.acked_mids.add(mid)

    def run(self) -> None:
        for msg in range(MESSAGES):
            info = self.client.publish(
                f"sf/v1/acme/dev-{self.device}/telemetry", _message(self.device, msg), qos=1
            )
            with self._lock:
                self.mids[info.mid] = msg
            self.sent += 1
            time.sleep(PACE_S)

    def acked(self) -> set[int]:
        with self._lock:
            return {m for mid, m in self.mids.items() if mid in self.acked_mids}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _wait(check: Any, what: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def _stored(api: Role, key: str) -> dict[str, list[tuple[int, float]]]:
    """Every stored point, read back through the API process: signal -> [(ts, value)]."""
    query = "&".join(f"signal=dev-{d}/s{k}" for d in range(DEVICES) for k in range(SIGNALS))
    body = api.get(
        f"/api/v1/points?{query}&start={T0_MS - 1}&end={_ts_ms(MESSAGES, 0)}"
        "&time_format=ns&limit=1000000",
        key,
    )
    return {s["signal"]: list(zip(s["ts"], s["value"], strict=True)) for s in body["series"]}


def _settled(read: Any, quiet_s: float = 1.0, timeout: float = 20.0) -> int:
    """``read()`` once it has not changed for ``quiet_s`` (the survivor drained its share)."""
    last, since, t0 = read(), time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return int(now)
    raise AssertionError(f"still changing after {timeout} s")


def _count(stored: dict[str, list[tuple[int, float]]]) -> int:
    return sum(len(v) for v in stored.values())


@pytest.fixture
def database() -> str:
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    return postgres_service.shared_cluster().new_database("scaleout")


def test_killing_an_ingest_worker_loses_no_acknowledged_point_and_doubles_none(
    tmp_path: Path, database: str
) -> None:
    require("Mosquitto", MOSQUITTO.exists())
    from shopfloor.historian.postgres_backend import PostgresHistorian
    from shopfloor.registry.service import Registry

    registry_url = database.replace("postgresql://", "postgresql+psycopg://", 1)
    registry = Registry(registry_url)
    registry.upgrade()
    _, key = registry.create_tenant("acme")
    registry.close()

    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    # As docs/scale-out.md says: no cap on what the broker queues for a session that is away
    # (the default, 1,000 messages, would drop the rest of a dead worker's share).
    with broker.config.open("a") as conf:
        conf.write("max_queued_messages 0\n")
    broker.start()
    common = {
        "registry_url": registry_url,
        "historian_url": database,
        "mqtt_mode": "external",
        "mqtt_url": f"mqtt://127.0.0.1:{broker.port}",
        "mqtt_device_rate": 100_000.0,
    }
    api = Role(tmp_path / "api", "api", common)
    workers = [Role(tmp_path / f"ingest-{i}", "ingest", common) for i in (1, 2)]
    publishers: list[Publisher] = []
    try:
        for r in (api, *workers):
            r.start()
        api.wait_ready("/health")
        for w in workers:
            _wait(lambda w=w: w.wait_ready()["status"] == "ok", "worker subscribed", 60)
        victim, survivor = workers

        publishers = [Publisher(broker.port, d) for d in range(DEVICES)]
        for p in publishers:
            p.start()
        # Kill one worker mid-stream, once it has stored part of its share.
        _wait(lambda: sum(p.sent for p in publishers) >= DEVICES * MESSAGES * 0.4, "40% sent", 30)
        victim_stored = victim.get("/api/v1/health")["messages_stored"]
        victim.kill()
        killed_at = sum(p.sent for p in publishers)
        for p in publishers:
            p.join(60)
        _wait(
            lambda: all(len(p.acked()) == MESSAGES for p in publishers),
            "the broker's PUBACK for every message",
            30,
        )
        acked = {(p.device, m) for p in publishers for m in p.acked()}
        assert len(acked) == DEVICES * MESSAGES

        # With one worker down: the survivor stores what it is given, and nothing more.
        survivor_health = survivor.get("/api/v1/health")
        before_restart = _settled(lambda: _count(_stored(api, key)))
        assert 0 < before_restart < POINTS, before_restart  # the victim's share waits for it

        # The killed worker comes back under its client id and gets its share of the stream.
        victim.start()
        _wait(lambda: victim.wait_ready()["status"] == "ok", "victim back", 60)
        _wait(lambda: _count(_stored(api, key)) >= POINTS, "every acknowledged point", 60)
        stored = _stored(api, key)

        # Every acknowledged point, with its own value at its own timestamp, once.
        expected = {
            f"dev-{d}/s{k}": sorted(
                (_ts_ms(m, s) * 1_000_000, _value(d, m, s, k))
                for m in range(MESSAGES)
                for s in range(STEPS)
            )
            for d in range(DEVICES)
            for k in range(SIGNALS)
        }
        assert {(d, m) for d in range(DEVICES) for m in range(MESSAGES)} == acked
        assert stored.keys() == expected.keys()
        for name, points in stored.items():
            assert points == expected[name], name  # sorted, so a repeat would show
        assert _count(stored) == POINTS

        # Both workers took part: each had stored messages before the kill / after it.
        assert victim_stored > 0
        assert survivor.get("/api/v1/health")["messages_stored"] > 0
        assert survivor_health["status"] == "ok"
        # An ingest worker serves its health probe and no API.
        with pytest.raises(urllib.error.HTTPError) as no_api:
            survivor.get("/api/v1/latest?device=dev-0", key)
        assert no_api.value.code == 404

        # Latest values in the API process (it wrote nothing: they came by NOTIFY).
        def latest_ok() -> bool:
            body = api.get("/api/v1/latest?device=dev-0&time_format=ns", key)
            got = {p["signal"]: (p["ts"], p["value"]) for p in body["points"]}
            return got == {f"dev-0/s{k}": expected[f"dev-0/s{k}"][-1] for k in range(SIGNALS)}

        _wait(latest_ok, "the newest values through the API process", 5)

        # Rows in the database: a message whose COPY committed but whose PUBACK the kill cut
        # off is delivered again and its rows written twice; reads and compaction keep one.
        import psycopg

        with psycopg.connect(database) as con:
            row = con.execute(
                "SELECT count(*), count(DISTINCT (tenant_id, signal_id, ts)) FROM hist_recent"
            ).fetchone()
        assert row is not None
        rows, distinct = int(row[0]), int(row[1])
        assert distinct == POINTS
        h = PostgresHistorian(database, background=False, listen=False)
        try:
            h.compact()
            stats = h.stats()
        finally:
            h.close()
        assert stats["block_points"] == POINTS
        assert stats["recent_points"] == 0
        assert _count(_stored(api, key)) == POINTS
        print(
            f"\nkilled after {killed_at} of {DEVICES * MESSAGES} messages sent; "
            f"victim had stored {victim_stored} messages; points stored before its restart "
            f"{before_restart} of {POINTS}; rows written {rows} for {distinct} points "
            f"({rows - distinct} redelivered); after compaction {stats['block_points']}"
        )
    finally:
        for p in publishers:
            p.close()
        for r in (*workers, api):
            r.stop()
        broker.stop()
