"""Live evaluation (rules/runtime.py) over the real app: HTTP ingest -> rules -> alarms, live
over the WebSocket GET /api/v1/alarms/live."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.timeutil import now_ns
from shopfloor.registry.service import SignalSpec
from shopfloor.rules.engine import RuleEngine
from shopfloor.rules.evaluators import ExpressionEval
from shopfloor.rules.runtime import RulesRuntime
from shopfloor.security.roles import Role

PASSWORD = "correct-horse-battery-9"
V1 = "/api/v1"
LIVE = f"{V1}/alarms/live"
ROOT = Path(__file__).resolve().parents[2]
HOT = {
    "name": "hot",
    "device_type": "press",
    "priority": 2,
    "definition": {"kind": "threshold", "signal": "temp", "limit": 80},
}
SPARKS = {
    "name": "sparks",
    "device": "press-01",
    "definition": {"kind": "expression", "expression": "temp > 50"},
}


@dataclass
class World:
    platform: Platform
    client: TestClient
    tenants: dict[str, int]
    headers: Callable[..., dict[str, str]]


def _make(tmp_path: Path, queue_size: int | None = None) -> Iterator[World]:
    plat = Platform(Settings(data_dir=tmp_path / "data", mqtt_mode="off"))
    if queue_size is not None:
        plat.runtime = RulesRuntime(plat.registry, plat.rules, plat.alarms, queue_size=queue_size)
        plat.ingestor.on_durable = plat.runtime.feed
    plat.runtime.refresh_s = 0.0  # see rule changes at once
    reg = plat.registry
    tenants = {}
    for name in ("acme", "other"):
        t, _ = reg.create_tenant(name)
        tenants[name] = t.id
        reg.create_device_type(t.id, "press", [SignalSpec("temp")])
        reg.create_device(t.id, "press-01", "press")
    count = 0

    def headers(tenant: str, role: Role = Role.ENGINEER) -> dict[str, str]:
        nonlocal count
        count += 1
        user = plat.auth.create_user(
            tenants[tenant], f"{role.value}-{count}", PASSWORD, [(role, None)]
        )
        _, token = plat.auth.issue_token(user.id, "tests")
        return {"Authorization": f"Bearer {token}"}

    with TestClient(create_app(platform=plat)) as client:
        yield World(plat, client, tenants, headers)
    plat.close()


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    yield from _make(tmp_path)


def _ingest(w: World, h: dict[str, str], value: float, ts: int | None = None) -> None:
    ts = now_ns() if ts is None else ts
    doc = {
        "device": "press-01",
        "ts_unit": "ns",
        "points": [{"signal": "temp", "ts": ts, "value": value}],
    }
    r = w.client.post(f"{V1}/ingest", json=doc, headers=h)
    assert r.status_code == 200, r.text


def _wait(cond: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_ingest_raises_and_clears_an_alarm_live(w: World) -> None:
    acme, other = w.headers("acme"), w.headers("other")
    for h in (acme, other):
        assert w.client.post(f"{V1}/rules", json=HOT, headers=h).status_code == 201
    with (
        w.client.websocket_connect(LIVE, headers=acme) as ws_a,
        w.client.websocket_connect(LIVE, headers=other) as ws_b,
    ):
        t0 = now_ns()
        _ingest(w, acme, 20.0, t0)
        _ingest(w, acme, 95.0, t0 + 1000)
        msg = ws_a.receive_json()
        assert msg["type"] == "alarm"
        assert (msg["rule"], msg["device"], msg["to_state"]) == ("hot", "press-01", "unack_active")
        assert msg["value"] == 95.0
        assert msg["annunciated"] is True
        alarms = w.client.get(f"{V1}/alarms", headers=acme).json()["alarms"]
        assert [(a["rule"], a["state"], a["active"]) for a in alarms] == [
            ("hot", "unack_active", True)
        ]
        assert w.client.get(f"{V1}/alarms", headers=other).json()["alarms"] == []

        _ingest(w, acme, 10.0, t0 + 2000)
        cleared = ws_a.receive_json()
        assert cleared["from_state"] == "unack_active"
        assert cleared["to_state"] == "unack_rtn"
        alarms = w.client.get(f"{V1}/alarms", headers=acme).json()["alarms"]
        assert alarms[0]["active"] is False

        # The other tenant's socket saw none of that: its first message is its own alarm.
        _ingest(w, other, 99.0)
        mine = ws_b.receive_json()
        assert mine["value"] == 99.0
        assert mine["to_state"] == "unack_active"


def test_live_needs_a_credential_and_read_permission(w: World) -> None:
    for headers, code in (
        ({}, 4401),
        ({"Authorization": "Bearer nope"}, 4401),
        (w.headers("acme", Role.AUDITOR), 4403),
    ):
        with w.client.websocket_connect(LIVE, headers=headers) as ws:
            with pytest.raises(WebSocketDisconnect) as err:
                ws.receive_json()
            assert err.value.code == code
    # The session cookie works like the header.
    w.platform.auth.create_user(w.tenants["acme"], "vera", PASSWORD, [(Role.VIEWER, None)])
    _, secret, _ = w.platform.auth.login("acme", "vera", PASSWORD)
    w.client.post(f"{V1}/rules", json=HOT, headers=w.headers("acme"))
    w.client.cookies.set("sf_session", secret)
    try:
        with w.client.websocket_connect(LIVE) as ws:
            _ingest(w, w.headers("acme"), 90.0)
            assert ws.receive_json()["rule"] == "hot"
    finally:
        w.client.cookies.clear()


def test_failing_rule_is_disabled_with_reason_others_go_on(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = w.headers("acme")
    for body in (HOT, SPARKS):
        assert w.client.post(f"{V1}/rules", json=body, headers=acme).status_code == 201

    def broken(self: ExpressionEval, *args: Any) -> Any:
        raise ValueError("bad data")

    monkeypatch.setattr(ExpressionEval, "run", broken)
    with w.client.websocket_connect(LIVE, headers=acme) as ws:
        _ingest(w, acme, 95.0)
        msg = ws.receive_json()
        assert msg["rule"] == "hot"

    def disabled() -> Any:
        rule = w.client.get(f"{V1}/rules/sparks", headers=acme).json()
        return rule if not rule["enabled"] else None

    rule = _wait(disabled, "the failing rule to be disabled")
    assert rule["disabled_reason"] == "disabled at run time: ValueError: bad data"
    assert w.client.get(f"{V1}/rules/hot", headers=acme).json()["enabled"] is True
    # The working rule keeps working after the rebuild without the failed one.
    with w.client.websocket_connect(LIVE, headers=acme) as ws:
        _ingest(w, acme, 10.0)
        assert ws.receive_json()["to_state"] == "unack_rtn"


def test_the_evaluation_path_loads_no_rules_or_devices_while_nothing_changes(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading every rule, device and signal of a large tenant took 100-400 ms and held the
    waiting batch up (the alarm-latency benchmark's slow samples): once built, an engine is
    checked with the one-row change key only, until something changes."""
    rt = w.platform.runtime
    acme = w.headers("acme")
    assert w.client.post(f"{V1}/rules", json=HOT, headers=acme).status_code == 201
    loads = []
    real = rt._fingerprint
    monkeypatch.setattr(rt, "_fingerprint", lambda tid: loads.append(tid) or real(tid))
    with w.client.websocket_connect(LIVE, headers=acme) as ws:
        t0 = now_ns()
        _ingest(w, acme, 95.0, t0)  # the first batch builds the engine
        assert ws.receive_json()["to_state"] == "unack_active"
        built = len(loads)
        assert built >= 1
        for i in range(20):
            _ingest(w, acme, 90.0 - i, t0 + (i + 1) * 1000)
        _ingest(w, acme, 10.0, t0 + 50_000)
        assert ws.receive_json()["to_state"] == "unack_rtn"
        assert len(loads) == built  # 22 batches, every one checked (refresh_s 0), none loaded
        # A rule saved now changes the key: the next batch rebuilds and evaluates it.
        assert w.client.post(f"{V1}/rules", json=SPARKS, headers=acme).status_code == 201
        _ingest(w, acme, 60.0, t0 + 60_000)
        assert ws.receive_json()["rule"] == "sparks"
        assert len(loads) > built


def test_a_change_the_key_misses_is_found_by_the_full_check(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = w.platform.runtime
    rt.full_check_s = 0.05
    acme = w.headers("acme")
    assert w.client.post(f"{V1}/rules", json=HOT, headers=acme).status_code == 201
    with w.client.websocket_connect(LIVE, headers=acme) as ws:
        t0 = now_ns()
        _ingest(w, acme, 95.0, t0)
        assert ws.receive_json()["rule"] == "hot"
        # A key that never moves stands for a change it cannot see.
        monkeypatch.setattr(w.platform.rules, "change_key", lambda tid: ("frozen",))
        rt._tenants[w.tenants["acme"]].change_key = ("frozen",)
        assert w.client.post(f"{V1}/rules", json=SPARKS, headers=acme).status_code == 201
        engine = rt._tenants[w.tenants["acme"]]
        _wait(lambda: engine.stale, "the background full check to mark the engine stale")
        _ingest(w, acme, 60.0, t0 + 1000)
        msg = ws.receive_json()
        assert (msg["rule"], msg["to_state"]) == ("sparks", "unack_active")


def test_a_tenant_without_rules_costs_no_evaluation_until_a_rule_comes(w: World) -> None:
    rt = w.platform.runtime
    rt.refresh_s = 2.0  # as the default: the engine is checked at most every refresh_s
    acme = w.headers("acme")
    t0 = now_ns()
    _ingest(w, acme, 20.0, t0)  # builds the (empty) engine
    _wait(lambda: w.tenants["acme"] in rt._tenants, "the engine")
    evaluated = rt.batches
    for i in range(10):
        _ingest(w, acme, 20.0, t0 + (i + 1) * 1000)
    assert rt.skipped >= 5  # most were never queued (one a refresh_s may still go through)
    assert rt.batches - evaluated <= 10 - rt.skipped
    # A rule saved now is seen at the next check: batches are queued and evaluated again.
    assert w.client.post(f"{V1}/rules", json=HOT, headers=acme).status_code == 201
    with w.client.websocket_connect(LIVE, headers=acme) as ws:
        time.sleep(rt.refresh_s + 0.2)
        _ingest(w, acme, 20.0, t0 + 20_000)  # passes the check, rebuilds with the rule
        _wait(lambda: rt._tenants[w.tenants["acme"]].engine.has_rules, "the rebuilt engine")
        _ingest(w, acme, 95.0, t0 + 21_000)
        assert ws.receive_json()["rule"] == "hot"


def test_ingest_never_waits_for_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _make(tmp_path, queue_size=1)
    w = next(gen)
    try:
        acme = w.headers("acme")
        assert w.client.post(f"{V1}/rules", json=HOT, headers=acme).status_code == 201
        release = threading.Event()
        entered = threading.Event()
        real = RuleEngine.process

        def slow(self: RuleEngine, *args: Any, **kw: Any) -> Any:
            entered.set()
            release.wait(10)
            return real(self, *args, **kw)

        monkeypatch.setattr(RuleEngine, "process", slow)
        t0 = now_ns()
        _ingest(w, acme, 1.0, t0)
        assert entered.wait(5)  # the worker is stuck in the first batch
        started = time.monotonic()
        for i in range(5):
            _ingest(w, acme, 2.0, t0 + 1000 * (i + 1))  # 200 each, without waiting
        assert time.monotonic() - started < 2.0
        assert w.platform.runtime.dropped >= 3
        release.set()
        with w.client.websocket_connect(LIVE, headers=acme) as ws:
            _ingest(w, acme, 99.0, t0 + 10_000)
            assert ws.receive_json()["value"] == 99.0
    finally:
        release.set()
        gen.close()


def test_alarm_latency_benchmark_quick(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.alarm_latency",
            "--quick",
            "--samples",
            "5",
            "--background-points-per-s",
            "2000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("p50_ms", "p99_ms", "background_points_per_s", "samples"):
        assert key in result
    assert result["samples"] == 5
