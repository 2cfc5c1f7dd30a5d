"""The app SDK on the real platform: catalogue, host and API (apps/catalogue.py, apps/host.py,
api/apps_routes.py), with small apps defined here and the example third-party app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.apps.catalogue import Catalogue, check_app_class, installed_apps
from shopfloor.apps.sdk import App, AppConfig, AppManifest, AppRoute, PointBatch, Series
from shopfloor.core.config import Settings
from shopfloor.core.timeutil import now_ns
from shopfloor.registry.service import SignalSpec
from shopfloor.security.roles import Role

ROOT = Path(__file__).resolve().parents[2]
V1 = "/api/v1"
PASSWORD = "correct-horse-battery-9"


class CounterConfig(AppConfig):
    signal: str = "temp"
    factor: float = 2.0


class Counter(App[CounterConfig]):
    """Counts points, keeps the sum, writes value*factor back as `scaled`."""

    manifest = AppManifest(
        name="counter", title="Counter", version="0.1.0", summary="counts", tick_s=0.1
    )
    config_model = CounterConfig
    example_config: Mapping[str, Any] = {"signal": "temp"}

    def __init__(self, ctx: Any, config: CounterConfig) -> None:
        super().__init__(ctx, config)
        self.n = 0
        self.total = 0.0

    def subscriptions(self) -> Sequence[int]:
        return self.ctx.signal_ids(None, self.config.signal)

    def on_points(self, batch: PointBatch) -> None:
        self.n += len(batch)
        self.total += float(np.nansum(batch.value))
        names = {d.signals.get(self.config.signal): d.name for d in self.ctx.devices()}
        for sid, s in batch.by_signal().items():
            self.ctx.write(names[sid], "scaled", Series(s.ts, s.values * self.config.factor))

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.n, self.total = int(state["n"]), float(state["total"])

    def status(self) -> dict[str, Any]:
        return {"n": self.n}

    def summary(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "tenant": self.ctx.tenant}

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        return (AppRoute("summary", "the counts", Counter.summary, {"x": "unused"}),)


class Watchdog(App[AppConfig]):
    """Writes a derived signal and keeps a rule on it: the way every built-in app alarms."""

    manifest = AppManifest(
        name="watchdog", title="Watchdog", version="0.1.0", summary="alarms", tick_s=0.1
    )

    def subscriptions(self) -> Sequence[int]:
        return self.ctx.signal_ids(None, "temp")

    def on_points(self, batch: PointBatch) -> None:
        for s in batch.by_signal().values():
            self.ctx.write("press-01", "too_hot", Series(s.ts, (s.values > 80).astype(float)))
        self.ctx.ensure_rule(
            "too-hot",
            device="press-01",
            definition={"kind": "threshold", "signal": "too_hot", "limit": 0.5},
            priority=2,
            message="the watchdog says: too hot",
        )


class Broken(App[AppConfig]):
    manifest = AppManifest(name="broken", title="Broken", version="0.1.0", summary="raises")

    def subscriptions(self) -> Sequence[int]:
        return self.ctx.signal_ids(None, "temp")

    def on_points(self, batch: PointBatch) -> None:
        raise RuntimeError("the app's own bug")


class BadSubscriptions(App[AppConfig]):
    manifest = AppManifest(name="bad-subs", title="Bad", version="0.1.0", summary="raises")

    def subscriptions(self) -> Sequence[int]:
        raise KeyError("no such signal")


APPS = {
    "counter": Counter,
    "broken": Broken,
    "bad-subs": BadSubscriptions,
    "watchdog": Watchdog,
}


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.platform = self.open()
        reg = self.platform.registry
        self.tenants: dict[str, int] = {}
        for name in ("acme", "other"):
            t, _ = reg.create_tenant(name)
            self.tenants[name] = t.id
            ent = reg.create_asset(t.id, "enterprise", "acme-corp")
            site = reg.create_asset(t.id, "site", "plant", ent.id)
            area = reg.create_asset(t.id, "area", "hall", site.id)
            reg.create_device_type(t.id, "press", [SignalSpec("temp")])
            reg.create_device(t.id, "press-01", "press", area.id)
        self.n = 0

    def open(self) -> Platform:
        plat = Platform(Settings(data_dir=self.tmp / "data", mqtt_mode="off"))
        plat.catalogue.apps = dict(APPS)
        return plat

    def headers(
        self, tenant: str, role: Role = Role.ENGINEER, asset: int | None = None
    ) -> dict[str, str]:
        self.n += 1
        user = self.platform.auth.create_user(
            self.tenants[tenant], f"u{self.n}", PASSWORD, [(role, asset)]
        )
        _, token = self.platform.auth.issue_token(user.id, "tests")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    world.platform.close()


def wait(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def ingest(c: TestClient, h: dict[str, str], values: list[float]) -> None:
    t0 = now_ns()
    doc = {
        "device": "press-01",
        "ts_unit": "ns",
        "points": [{"signal": "temp", "ts": t0 + i, "value": v} for i, v in enumerate(values)],
    }
    r = c.post(f"{V1}/ingest", json=doc, headers=h)
    assert r.status_code == 200, r.text


def test_enable_feed_write_back_and_read_over_the_api(w: World) -> None:
    h, other = w.headers("acme"), w.headers("other")
    with TestClient(create_app(platform=w.platform)) as c:
        listed = c.get(f"{V1}/apps", headers=h).json()["apps"]
        assert {a["name"]: a["enabled"] for a in listed} == dict.fromkeys(APPS, False)
        r = c.put(
            f"{V1}/apps/counter", json={"enabled": True, "config": {"factor": "3"}}, headers=h
        )
        assert r.status_code == 422  # strict: a string is not a number
        assert r.json()["error"]["field"] == "config.factor"
        r = c.put(
            f"{V1}/apps/counter", json={"enabled": True, "config": {"factor": 3.0}}, headers=h
        )
        assert r.status_code == 200, r.text
        detail = r.json()
        assert detail["config"] == {"signal": "temp", "factor": 3.0}
        assert detail["config_schema"]["properties"]["factor"]["default"] == 2.0
        assert detail["routes"][0]["path"] == f"{V1}/apps/counter/summary"
        wait(lambda: w.platform.apps.instance(w.tenants["acme"], "counter"), "the app to start")
        ingest(c, h, [1.0, 2.0, 4.0])
        got = wait(
            lambda: (
                (c.get(f"{V1}/apps/counter/summary", headers=h).json()["n"] == 3)
                and c.get(f"{V1}/apps/counter/summary", headers=h).json()
            ),
            "the points to reach the app",
        )
        assert got == {"n": 3, "total": 7.0, "tenant": "acme"}

        # The derived signal is stored like any point (and the rules see it).
        def scaled() -> list[float]:
            r = c.get(
                f"{V1}/points",
                params={"signal": "press-01/scaled", "start": "-1h", "end": "now"},
                headers=h,
            )
            series = r.json().get("series", [])
            return sorted(series[0]["value"]) if series else []

        assert wait(scaled, "the derived signal") == [3.0, 6.0, 12.0]
        # Another tenant did not enable it: its route answers 404, its data never reaches it.
        r = c.get(f"{V1}/apps/counter/summary", headers=other)
        assert r.status_code == 404
        assert "not enabled" in r.json()["error"]["message"]
        ingest(c, other, [100.0])
        time.sleep(0.3)
        assert c.get(f"{V1}/apps/counter/summary", headers=h).json()["n"] == 3
        # Unknown query parameters are refused by name; an unknown app is 404.
        r = c.get(f"{V1}/apps/counter/summary", params={"y": "1"}, headers=h)
        assert r.status_code == 422
        assert c.get(f"{V1}/apps/nope", headers=h).status_code == 404


def test_permissions_and_subtree_roles(w: World) -> None:
    acme = w.tenants["acme"]
    area = next(a.id for a in w.platform.registry.list_assets(acme) if a.name == "hall")
    op, sub = w.headers("acme", Role.OPERATOR), w.headers("acme", Role.ENGINEER, area)
    with TestClient(create_app(platform=w.platform)) as c:
        assert c.get(f"{V1}/apps", headers=op).status_code == 200
        r = c.put(f"{V1}/apps/counter", json={"enabled": True}, headers=op)
        assert r.status_code == 403  # operators use apps, engineers set them up
        r = c.get(f"{V1}/apps", headers=sub)
        assert r.status_code == 403  # apps span the tenant: a subtree role is refused
        assert c.get(f"{V1}/apps").status_code == 401


def test_a_failing_app_stops_with_its_reason_and_the_others_run_on(w: World) -> None:
    h = w.headers("acme")
    with TestClient(create_app(platform=w.platform)) as c:
        for name in ("counter", "broken"):
            assert c.put(f"{V1}/apps/{name}", json={"enabled": True}, headers=h).status_code == 200
        acme = w.tenants["acme"]
        wait(lambda: w.platform.apps.instance(acme, "broken"), "both apps to start")
        ingest(c, h, [1.0])
        status = wait(
            lambda: c.get(f"{V1}/apps/broken", headers=h).json()["status"]["failed"],
            "the broken app to be stopped",
        )
        assert "on_points raised RuntimeError: the app's own bug" in status
        assert c.get(f"{V1}/apps/counter/summary", headers=h).json()["n"] == 1
        ingest(c, h, [2.0])
        wait(lambda: c.get(f"{V1}/apps/counter/summary", headers=h).json()["n"] == 2, "counter")
        # Enabling it again starts it afresh.
        c.put(f"{V1}/apps/broken", json={"enabled": True}, headers=h)
        wait(
            lambda: c.get(f"{V1}/apps/broken", headers=h).json()["status"]["failed"] is None,
            "a fresh start",
        )
        # Disabled: it stops, and its routes answer 404.
        r = c.put(f"{V1}/apps/counter", json={"enabled": False}, headers=h)
        assert r.status_code == 200
        assert r.json()["enabled"] is False
        wait(lambda: w.platform.apps.instance(acme, "counter") is None, "the app to stop")
        assert c.get(f"{V1}/apps/counter/summary", headers=h).status_code == 404


def test_state_survives_a_restart(w: World) -> None:
    h = w.headers("acme")
    with TestClient(create_app(platform=w.platform)) as c:
        c.put(f"{V1}/apps/counter", json={"enabled": True}, headers=h)
        wait(lambda: w.platform.apps.instance(w.tenants["acme"], "counter"), "start")
        ingest(c, h, [5.0, 6.0])
        wait(lambda: c.get(f"{V1}/apps/counter/summary", headers=h).json()["n"] == 2, "points")
    # The app host saved the state when the platform stopped; a new platform restores it.
    w.platform.close()
    w.platform = w.open()
    h = w.headers("acme")
    with TestClient(create_app(platform=w.platform)) as c:
        wait(lambda: w.platform.apps.instance(w.tenants["acme"], "counter"), "restart")
        assert c.get(f"{V1}/apps/counter/summary", headers=h).json() == {
            "n": 2,
            "total": 11.0,
            "tenant": "acme",
        }


def test_the_catalogue_loads_entry_points_and_refuses_bad_classes() -> None:
    apps = installed_apps()
    for name, cls in apps.items():
        assert cls.manifest.name == name
    with pytest.raises(ValueError, match="differs from the manifest"):
        check_app_class(Counter, "other-name")
    with pytest.raises(ValueError, match=r"not a shopfloor\.apps\.sdk\.App subclass"):
        check_app_class(dict, "counter")


def test_catalogue_config_is_checked_before_it_is_stored(w: World) -> None:
    cat = Catalogue(w.platform.registry, APPS)
    acme = w.tenants["acme"]
    from shopfloor.core.errors import BadInput, NotFound

    with pytest.raises(BadInput) as err:
        cat.enable(acme, "counter", {"nope": 1}, actor="t")
    assert err.value.field == "config.nope"
    assert cat.get(acme, "counter") is None
    with pytest.raises(NotFound):
        cat.enable(acme, "missing", {}, actor="t")
    info = cat.enable(acme, "counter", {"factor": 1.5}, actor="t")
    assert info.config == {"signal": "temp", "factor": 1.5}
    again = cat.enable(acme, "counter", None, actor="t")  # None keeps the stored config
    assert again.config == {"signal": "temp", "factor": 1.5}
    assert cat.disable(acme, "counter", actor="t").enabled is False


def test_check_app_finds_what_is_wrong_with_an_app(tmp_path: Path) -> None:
    from shopfloor.testing import check_app

    class Leaky(Counter):
        manifest = AppManifest(name="leaky", title="Leaky", version="0.1.0", summary="bad")

        def state(self) -> dict[str, Any]:
            return {"n": self.n, "when": object()}

    report = check_app(Leaky, tmp_path, config={"signal": "motor_temp"}, minutes=2)
    assert not report.ok
    assert any("state() is not JSON-safe" in p for p in report.problems), report.problems
    good = check_app(Counter, tmp_path / "good", config={"signal": "motor_temp"}, minutes=2)
    assert good.ok, str(good)
    assert good.points_fed > 0
    assert good.routes["summary"]["n"] == good.points_fed


def test_an_app_failing_at_start_stops_alone_and_cli_changes_are_picked_up(w: World) -> None:
    """Enabled from another process (as `shopfloor app enable` does: a Catalogue of its own on
    the same registry), a running platform starts the apps; one whose subscriptions raise is
    stopped with its reason, the other gets its points; bad-quality points never reach it."""
    acme = w.tenants["acme"]
    h = w.headers("acme")
    with TestClient(create_app(platform=w.platform)) as c:
        cli = Catalogue(w.platform.registry, APPS)
        cli.enable(acme, "bad-subs", {}, actor="cli:test")
        cli.enable(acme, "counter", {}, actor="cli:test")
        wait(lambda: w.platform.apps.instance(acme, "counter"), "the CLI's enable to be seen")
        bad = wait(lambda: w.platform.apps.instance(acme, "bad-subs"), "the failing app")
        assert "subscriptions raised KeyError" in str(bad.failed)
        t0 = now_ns()
        doc = {
            "device": "press-01",
            "ts_unit": "ns",
            "points": [
                {"signal": "temp", "ts": t0, "value": 1.0},
                {"signal": "temp", "ts": t0 + 1, "value": 50.0, "quality": "bad"},
                {"signal": "temp", "ts": t0 + 2, "value": 2.0, "quality": "uncertain"},
            ],
        }
        assert c.post(f"{V1}/ingest", json=doc, headers=h).status_code == 200
        got = wait(
            lambda: (
                c.get(f"{V1}/apps/counter/summary", headers=h).json()["n"] == 2
                and c.get(f"{V1}/apps/counter/summary", headers=h).json()
            ),
            "the good and uncertain points",
        )
        assert got["total"] == 3.0  # the bad point's 50 never arrived
        cli.disable(acme, "counter", actor="cli:test")
        wait(lambda: w.platform.apps.instance(acme, "counter") is None, "the CLI's disable")


def test_an_app_raises_an_alarm_through_the_alarm_system(w: World) -> None:
    """Derived signal -> the app's kept rule -> an ISA-18.2 alarm, acknowledged like any."""
    acme = w.tenants["acme"]
    h = w.headers("acme")
    w.platform.runtime.refresh_s = 0.0  # the rules see the app's new rule at once
    with TestClient(create_app(platform=w.platform)) as c:
        assert c.put(f"{V1}/apps/watchdog", json={"enabled": True}, headers=h).status_code == 200
        wait(lambda: w.platform.apps.instance(acme, "watchdog"), "the app to start")
        ingest(c, h, [20.0])  # the first batch makes the rule
        wait(lambda: c.get(f"{V1}/rules/watchdog:too-hot", headers=h).status_code == 200, "rule")
        ingest(c, h, [95.0])
        alarms = wait(
            lambda: [
                a
                for a in c.get(f"{V1}/alarms", headers=h).json()["alarms"]
                if a["rule"] == "watchdog:too-hot" and a["state"] == "unack_active"
            ],
            "the alarm",
        )
        assert alarms[0]["message"] == "the watchdog says: too hot"
        assert alarms[0]["priority"] == 2
        r = c.post(f"{V1}/alarms/watchdog:too-hot/press-01/ack", json={"comment": "ok"}, headers=h)
        assert r.status_code == 200
        assert r.json()["state"] == "ack_active"
