"""Dashboards over HTTP: scopes, tenant isolation, strict validation, export and import."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.dashboard_routes import MAX_SIGNALS, MAX_WIDGETS
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.registry.service import SignalSpec
from shopfloor.security.roles import Role

PASSWORD = "correct-horse-battery-9"
V1 = "/api/v1"
GHOST_ID = 987_654


@dataclass
class World:
    client: TestClient
    platform: Platform
    users: dict[str, dict[str, str]]  # name -> headers; "other-*" belong to tenant "other"

    def call(self, who: str, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, f"{V1}{path}", json=body, headers=self.users[who])


def _tenant(platform: Platform, name: str) -> tuple[int, int]:
    reg = platform.registry
    tenant, _ = reg.create_tenant(name, auto_register_signals=False)
    works = reg.create_asset(tenant.id, "enterprise", f"{name}-works")
    hall = reg.create_asset(tenant.id, "site", f"{name}-hall", works.id)
    yard = reg.create_asset(tenant.id, "site", f"{name}-yard", works.id)
    reg.create_device_type(
        tenant.id, "press", [SignalSpec("temp"), SignalSpec("speed"), SignalSpec("state")]
    )
    reg.create_device(tenant.id, f"{name}-press", "press", hall.id)
    reg.create_device(tenant.id, f"{name}-saw", "press", yard.id)
    return tenant.id, hall.id


def _world(data: Path) -> Iterator[World]:
    platform = Platform(Settings(data_dir=data, mqtt_mode="off"))
    acme, hall = _tenant(platform, "acme")
    other, _ = _tenant(platform, "other")
    roles = {
        "engineer": (acme, Role.ENGINEER, None),
        "viewer": (acme, Role.VIEWER, None),
        "viewer2": (acme, Role.VIEWER, None),
        "hall-viewer": (acme, Role.VIEWER, hall),  # bound below the hall site
        "hall-engineer": (acme, Role.ENGINEER, hall),
        "other-engineer": (other, Role.ENGINEER, None),
    }
    users = {}
    for name, (tenant_id, role, asset) in roles.items():
        user = platform.auth.create_user(tenant_id, name, PASSWORD, [(role, asset)])
        _, token = platform.auth.issue_token(user.id, "tests")
        users[name] = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(platform=platform)) as client:
        yield World(client, platform, users)
    platform.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path / "data")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for the many refusals: each leaves it as it found it."""
    yield from _world(tmp_path_factory.mktemp("dashboards") / "data")


def board(name: str = "Press overview", scope: str = "user", prefix: str = "acme") -> Any:
    return {
        "name": name,
        "scope": scope,
        "widgets": [
            {
                "kind": "line_chart",
                "title": "Temperatures",
                "signals": [f"{prefix}-press/temp", f"{prefix}-saw/temp"],
                "options": {"range": "6h", "unit": "°C"},
                "w": 12,
                "h": 2,
            },
            {
                "kind": "gauge",
                "title": "Speed",
                "signals": [f"{prefix}-press/speed"],
                "options": {"min": 0, "max": 120.5},
            },
            {"kind": "value_card", "signals": [f"{prefix}-saw/speed"]},
            {"kind": "state_timeline", "device": f"{prefix}-press"},
            {"kind": "alarm_list", "title": "Alarms"},
            {"kind": "oee_tile", "device": f"{prefix}-press", "w": 3},
        ],
    }


def error(r: Any) -> dict[str, Any]:
    detail: dict[str, Any] = r.json()["error"]
    return detail


def create(world: World, who: str, body: Any) -> dict[str, Any]:
    r = world.call(who, "POST", "/dashboards", body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


# -- create, read, list ------------------------------------------------------------------------


def test_a_viewer_keeps_its_own_dashboard(world: World) -> None:
    made = create(world, "viewer", board())
    assert made["scope"] == "user"
    assert made["mine"]
    assert made["editable"]
    assert made["created_by"] == "token:tests@viewer"
    got = world.call("viewer", "GET", f"/dashboards/{made['id']}").json()
    assert got["widgets"] == made["widgets"]
    assert got["widgets"][0]["signals"] == ["acme-press/temp", "acme-saw/temp"]
    assert got["widgets"][1]["options"] == {"range": "1h", "min": 0.0, "max": 120.5, "unit": ""}
    assert got["widgets"][2]["w"] == 6
    assert got["widgets"][2]["h"] == 1
    changed = {**board("Renamed"), "widgets": board()["widgets"][:2]}
    r = world.call("viewer", "PUT", f"/dashboards/{made['id']}", changed)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed"
    assert len(r.json()["widgets"]) == 2
    listed = world.call("viewer", "GET", "/dashboards").json()["dashboards"]
    assert [d["name"] for d in listed] == ["Renamed"]
    assert world.call("viewer", "DELETE", f"/dashboards/{made['id']}").status_code == 204
    assert world.call("viewer", "GET", f"/dashboards/{made['id']}").status_code == 404
    assert world.call("viewer", "GET", "/dashboards").json()["dashboards"] == []


def test_a_user_dashboard_is_private_to_its_owner(world: World) -> None:
    made = create(world, "viewer", board("Mine"))
    path = f"/dashboards/{made['id']}"
    for who in ("viewer2", "engineer"):  # another user of the same tenant, even an engineer
        listed = world.call(who, "GET", "/dashboards").json()["dashboards"]
        assert listed == []
        for method, suffix, body in (
            ("GET", "", None),
            ("PUT", "", board("Taken")),
            ("DELETE", "", None),
            ("GET", "/export", None),
        ):
            r = world.call(who, method, path + suffix, body)
            ghost = world.call(who, method, f"/dashboards/{GHOST_ID}{suffix}", body)
            assert r.status_code == ghost.status_code == 404, (who, method, r.text)
            assert (
                error(r)["message"].replace(str(made["id"]), str(GHOST_ID))
                == (error(ghost)["message"])
            )
    assert world.call("viewer", "GET", path).json()["name"] == "Mine"  # untouched


def test_a_tenant_dashboard_is_read_by_all_and_changed_by_registry_writers(world: World) -> None:
    made = create(world, "engineer", board("Line 1", scope="tenant"))
    path = f"/dashboards/{made['id']}"
    seen = world.call("viewer", "GET", "/dashboards").json()["dashboards"]
    assert [(d["name"], d["mine"], d["editable"]) for d in seen] == [("Line 1", False, False)]
    assert world.call("viewer", "GET", path).status_code == 200
    assert world.call("viewer", "GET", path + "/export").status_code == 200
    # A viewer (data.read only) changes nothing of it.
    for method, body in (("PUT", board("Hijacked", scope="tenant")), ("DELETE", None)):
        r = world.call("viewer", method, path, body)
        assert r.status_code == 403, r.text
        assert "registry.write" in error(r)["message"]
    r = world.call("viewer", "PUT", path, board("Mine now"))  # nor takes it private
    assert r.status_code == 403
    # A viewer cannot publish one either, directly or by import.
    r = world.call("viewer", "POST", "/dashboards", board("Published", scope="tenant"))
    assert r.status_code == 403
    doc = world.call("engineer", "GET", path + "/export").json()
    assert world.call("viewer", "POST", "/dashboards/import", doc).status_code == 403
    # A registry.write bound below an asset is not enough for a tenant-wide object.
    body = board("Hall", scope="tenant", prefix="acme")
    body["widgets"] = [{"kind": "value_card", "signals": ["acme-press/temp"]}]
    assert world.call("hall-engineer", "POST", "/dashboards", body).status_code == 403
    assert world.call("viewer", "GET", path).json()["name"] == "Line 1"
    # Another engineer of the tenant may change it.
    r = world.call("hall-engineer", "GET", path)
    assert r.status_code == 200
    assert r.json()["editable"] is False
    assert world.call("engineer", "PUT", path, board("Line 1b", scope="tenant")).status_code == 200
    assert world.call("viewer2", "GET", path).json()["name"] == "Line 1b"
    assert world.call("engineer", "DELETE", path).status_code == 204
    assert world.call("viewer", "GET", path).status_code == 404


def test_another_tenants_dashboard_answers_like_a_missing_one(world: World) -> None:
    theirs = create(world, "other-engineer", board("Theirs", scope="tenant", prefix="other"))
    private = create(world, "other-engineer", board("Their own", prefix="other"))
    for made in (theirs, private):
        for method, suffix, body in (
            ("GET", "", None),
            ("PUT", "", board("Taken")),
            ("DELETE", "", None),
            ("GET", "/export", None),
        ):
            r = world.call("engineer", method, f"/dashboards/{made['id']}{suffix}", body)
            ghost = world.call("engineer", method, f"/dashboards/{GHOST_ID}{suffix}", body)
            assert r.status_code == ghost.status_code == 404, (method, suffix, r.text)
            assert error(r)["type"] == error(ghost)["type"] == "NotFound"
            assert (
                error(r)["message"].replace(str(made["id"]), str(GHOST_ID))
                == (error(ghost)["message"])
            )
            assert "other" not in r.text
    assert world.call("engineer", "GET", "/dashboards").json()["dashboards"] == []
    names = [
        d["name"] for d in world.call("other-engineer", "GET", "/dashboards").json()["dashboards"]
    ]
    assert names == ["Their own", "Theirs"]  # untouched by the probes


def test_another_tenants_signal_is_an_unknown_signal(world: World) -> None:
    def answer(key: str) -> Any:
        body = {"name": "x", "widgets": [{"kind": "value_card", "signals": [key]}]}
        return world.call("engineer", "POST", "/dashboards", body)

    theirs, ghost = answer("other-press/temp"), answer("ghost-press/temp")
    assert theirs.status_code == ghost.status_code == 422
    assert error(theirs)["field"] == error(ghost)["field"] == "widgets.0.signals.0"
    assert error(theirs)["message"].replace("other-press", "ghost-press") == error(ghost)["message"]


def test_a_subtree_user_sees_only_its_signals_in_widgets(world: World) -> None:
    inside = {"name": "hall", "widgets": [{"kind": "value_card", "signals": ["acme-press/temp"]}]}
    assert world.call("hall-viewer", "POST", "/dashboards", inside).status_code == 201
    outside = {"name": "yard", "widgets": [{"kind": "value_card", "signals": ["acme-saw/temp"]}]}
    r = world.call("hall-viewer", "POST", "/dashboards", outside)
    assert r.status_code == 422
    assert error(r)["message"] == "unknown signal 'acme-saw/temp'"
    timeline = {"name": "yard", "widgets": [{"kind": "state_timeline", "device": "acme-saw"}]}
    r = world.call("hall-viewer", "POST", "/dashboards", timeline)
    assert (r.status_code, error(r)["field"]) == (422, "widgets.0.device")


# -- validation ---------------------------------------------------------------------------------


def _widget(**kw: Any) -> dict[str, Any]:
    return {
        "name": "bad",
        "widgets": [{"kind": "value_card", "signals": ["acme-press/temp"], **kw}],
    }


BAD: list[tuple[str, Any, str]] = [
    ("unknown kind", _widget(kind="pie_chart"), "widgets.0.kind"),
    ("unknown field", _widget(colour="red"), "widgets.0.colour"),
    ("string for an int", _widget(w="6"), "widgets.0.w"),
    ("too wide", _widget(w=13), "widgets.0.w"),
    ("bool for a float", _widget(options={"min": False}), "widgets.0.options.min"),
    ("bad range", _widget(options={"range": "forever"}), "widgets.0.options.range"),
    ("not a key", _widget(signals=["temp"]), "widgets.0.signals.0"),
    ("unknown signal", _widget(signals=["acme-press/pressure"]), "widgets.0.signals.0"),
    ("two for a card", _widget(signals=["acme-press/temp", "acme-saw/temp"]), "widgets.0.signals"),
    ("none for a card", _widget(signals=[]), "widgets.0.signals"),
    ("device for a card", _widget(device="acme-press"), "widgets.0.device"),
    (
        "gauge min above max",
        _widget(kind="gauge", options={"min": 10, "max": 5}),
        "widgets.0.options.max",
    ),
    (
        "twice the same signal",
        _widget(kind="line_chart", signals=["acme-press/temp", "acme-press/temp"]),
        "widgets.0.signals",
    ),
    (
        "too many signals",
        _widget(kind="line_chart", signals=[f"acme-press/s{i}" for i in range(MAX_SIGNALS + 1)]),
        "widgets.0.signals",
    ),
    (
        "timeline with both",
        _widget(kind="state_timeline", device="acme-press"),
        "widgets.0.signals",
    ),
    ("timeline with neither", _widget(kind="state_timeline", signals=[]), "widgets.0.device"),
    ("alarm list with signals", _widget(kind="alarm_list"), "widgets.0.signals"),
    ("unknown device", _widget(kind="oee_tile", signals=[], device="nowhere"), "widgets.0.device"),
    ("no name", {"widgets": []}, "name"),
    ("empty name", {"name": "", "widgets": []}, "name"),
    ("bad scope", {"name": "x", "scope": "world"}, "scope"),
    (
        "too many widgets",
        {"name": "x", "widgets": [{"kind": "alarm_list"}] * (MAX_WIDGETS + 1)},
        "widgets",
    ),
]


@pytest.mark.parametrize(("what", "body", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_dashboard_is_422_naming_the_field(
    shared: World, what: str, body: Any, field: str
) -> None:
    world = shared
    before = world.call("engineer", "GET", "/dashboards").json()["dashboards"]
    r = world.call("engineer", "POST", "/dashboards", body)
    assert r.status_code == 422, (what, r.text)
    assert error(r)["field"] == field, (what, r.text)
    # The same check on import, under "dashboard.", and on replace.
    doc = {"format": "shopfloor.dashboard", "version": 1, "dashboard": body}
    r = world.call("engineer", "POST", "/dashboards/import", doc)
    assert (r.status_code, error(r)["field"]) == (422, f"dashboard.{field}"), (what, r.text)
    made = create(world, "engineer", {"name": "good"})
    r = world.call("engineer", "PUT", f"/dashboards/{made['id']}", body)
    assert (r.status_code, error(r)["field"]) == (422, field), (what, r.text)
    assert world.call("engineer", "GET", f"/dashboards/{made['id']}").json()["name"] == "good"
    assert world.call("engineer", "DELETE", f"/dashboards/{made['id']}").status_code == 204
    # Nothing of the bad ones stored.
    assert world.call("engineer", "GET", "/dashboards").json()["dashboards"] == before


# -- export and import --------------------------------------------------------------------------


def test_export_then_import_round_trips(world: World) -> None:
    made = create(world, "engineer", board("Round trip", scope="tenant"))
    r = world.call("engineer", "GET", f"/dashboards/{made['id']}/export")
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert (doc["format"], doc["version"]) == ("shopfloor.dashboard", 1)
    assert doc["source"]["id"] == made["id"]
    assert doc["dashboard"]["widgets"] == made["widgets"]
    r = world.call("engineer", "POST", "/dashboards/import", doc)
    assert r.status_code == 201, r.text
    copy_ = r.json()
    assert copy_["id"] != made["id"]
    again = world.call("engineer", "GET", f"/dashboards/{copy_['id']}/export").json()
    assert again["dashboard"] == doc["dashboard"]
    assert again["source"]["id"] == copy_["id"]
    listed = world.call("viewer", "GET", "/dashboards").json()["dashboards"]
    assert sorted(d["id"] for d in listed) == sorted([made["id"], copy_["id"]])


def test_import_never_trusts_ids_from_the_file(world: World) -> None:
    victim = create(world, "viewer", board("Victim's"))
    theirs = create(world, "other-engineer", board("Other tenant's", prefix="other"))
    doc = world.call("engineer", "GET", f"/dashboards/{create(world, 'engineer', board())['id']}"
                     "/export").json()  # fmt: skip
    for target in (victim["id"], theirs["id"]):
        forged = copy.deepcopy(doc)
        forged["source"] = {"id": target, "tenant": "other", "owner": "user:1"}
        r = world.call("engineer", "POST", "/dashboards/import", forged)
        assert r.status_code == 201, r.text
        assert r.json()["id"] not in (victim["id"], theirs["id"])
        assert r.json()["mine"]
        assert r.json()["created_by"] == "token:tests@engineer"
    # An id inside the dashboard itself is refused, not taken.
    forged = copy.deepcopy(doc)
    forged["dashboard"]["id"] = victim["id"]
    r = world.call("engineer", "POST", "/dashboards/import", forged)
    assert (r.status_code, error(r)["field"]) == (422, "dashboard.id")
    assert world.call("viewer", "GET", f"/dashboards/{victim['id']}").json()["name"] == "Victim's"
    other = world.call("other-engineer", "GET", f"/dashboards/{theirs['id']}").json()
    assert other["name"] == "Other tenant's"


BAD_DOCS: list[tuple[str, Any, str | None]] = [
    ("newer version", {"version": 2}, "version"),
    ("bool version", {"version": True}, "version"),
    ("other format", {"format": "grafana"}, "format"),
    ("extra top-level field", {"panels": []}, "panels"),
    ("no dashboard", {"dashboard": None}, "dashboard"),
]


@pytest.mark.parametrize(("what", "change", "field"), BAD_DOCS, ids=[b[0] for b in BAD_DOCS])
def test_a_bad_document_is_422_naming_the_field(
    shared: World, what: str, change: dict[str, Any], field: str
) -> None:
    world = shared
    doc = {"format": "shopfloor.dashboard", "version": 1, "dashboard": board(), **change}
    r = world.call("viewer", "POST", "/dashboards/import", doc)
    assert r.status_code == 422, (what, r.text)
    assert error(r)["field"] == field, (what, r.text)
    assert world.call("viewer", "GET", "/dashboards").json()["dashboards"] == []


def test_a_document_that_is_not_json_is_400(world: World) -> None:
    r = world.client.post(
        f"{V1}/dashboards/import",
        content=b"{not json",
        headers={**world.users["viewer"], "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text
    assert world.call("viewer", "GET", "/dashboards").json()["dashboards"] == []
