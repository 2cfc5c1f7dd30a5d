"""Data-classification labels: inheritance down the hierarchy, the API, and who may set them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from shopfloor.api.platform import Platform
from shopfloor.core.types import Classification
from shopfloor.registry import SignalSpec
from shopfloor.security.audit import AuditFilter
from shopfloor.security.labels import Labels, LabelService
from shopfloor.security.roles import Role
from tests.security.conftest import Tenant, UserHeaders


@dataclass(frozen=True)
class Plant:
    site: int
    area: int
    line: int
    machine: int


@pytest.fixture
def plant(platform: Platform, acme: Tenant) -> Plant:
    """enterprise > site > area > line > machine; press-1 on the machine, loose unplaced."""
    reg, t = platform.registry, acme.info.id
    ent = reg.create_asset(t, "enterprise", "acme")
    site = reg.create_asset(t, "site", "shanghai", ent.id)
    area = reg.create_asset(t, "area", "stamping", site.id)
    line = reg.create_asset(t, "line", "line-1", area.id)
    machine = reg.create_asset(t, "machine", "press", line.id)
    reg.create_device(t, "press-1", asset_id=machine.id)
    reg.create_signal(t, "press-1", SignalSpec("temp"))
    reg.create_signal(t, "press-1", SignalSpec("force"))
    reg.create_device(t, "loose")
    reg.create_signal(t, "loose", SignalSpec("x"))
    return Plant(site.id, area.id, line.id, machine.id)


@pytest.fixture
def sec(user_headers: UserHeaders, acme: Tenant) -> dict[str, str]:
    return user_headers(Role.SECURITY_ADMIN, acme.info.id)


def effective(client: TestClient, headers: dict[str, str], *keys: str) -> dict[str, Any]:
    r = client.get(
        "/api/v1/labels/effective", params=[("signal", k) for k in keys], headers=headers
    )
    assert r.status_code == 200, r.text
    return {e["key"]: e for e in r.json()}


def put(client: TestClient, headers: dict[str, str], path: str, **body: Any) -> Any:
    return client.put(f"/api/v1/labels/{path}", json=body, headers=headers)


def test_site_core_makes_the_machines_signals_core(
    client: TestClient, plant: Plant, sec: dict[str, str]
) -> None:
    assert effective(client, sec, "press-1/temp")["press-1/temp"]["classification"] == "general"
    r = put(client, sec, f"assets/{plant.site}", classification="core")
    assert r.status_code == 200, r.text
    got = effective(client, sec, "press-1/temp", "press-1/force", "loose/x")
    assert got["press-1/temp"]["classification"] == "core"
    assert got["press-1/temp"]["classification_from"] == f"asset:{plant.site}:shanghai"
    assert got["press-1/force"]["classification"] == "core"
    assert got["loose/x"]["classification"] == "general"  # not below the site
    assert got["loose/x"]["classification_from"] == "signal:loose/x"


def test_a_child_cannot_downgrade(client: TestClient, plant: Plant, sec: dict[str, str]) -> None:
    assert put(client, sec, f"assets/{plant.area}", classification="important").status_code == 200
    assert put(client, sec, f"assets/{plant.machine}", classification="general").status_code == 200
    assert put(client, sec, "devices/press-1", classification="general").status_code == 200
    assert put(client, sec, "signals/press-1/temp", classification="general").status_code == 200
    got = effective(client, sec, "press-1/temp")["press-1/temp"]
    assert (got["classification"], got["classification_from"]) == (
        "important",
        f"asset:{plant.area}:stamping",
    )
    # A stricter tier below still wins over the one above.
    assert put(client, sec, "signals/press-1/temp", classification="core").status_code == 200
    got = effective(client, sec, "press-1/temp", "press-1/force")
    assert got["press-1/temp"]["classification"] == "core"
    assert got["press-1/temp"]["classification_from"] == "signal:press-1/temp"
    assert got["press-1/force"]["classification"] == "important"


def test_personal_data_is_true_if_any_level_says_so(
    client: TestClient, plant: Plant, sec: dict[str, str]
) -> None:
    assert put(client, sec, f"assets/{plant.line}", personal_data=True).status_code == 200
    assert put(client, sec, f"assets/{plant.machine}", personal_data=False).status_code == 200
    assert put(client, sec, "signals/press-1/force", personal_data=False).status_code == 200
    got = effective(client, sec, "press-1/temp", "press-1/force", "loose/x")
    assert got["press-1/temp"]["personal_data"] is True
    assert got["press-1/temp"]["personal_data_from"] == f"asset:{plant.line}:line-1"
    assert got["press-1/force"]["personal_data"] is True  # false below cannot clear it
    assert got["loose/x"]["personal_data"] is False
    assert put(client, sec, "devices/loose", personal_data=True).status_code == 200
    assert effective(client, sec, "loose/x")["loose/x"]["personal_data_from"] == "device:loose"


def test_residency_nearest_wins_and_falls_back_to_the_tenant(
    client: TestClient, plant: Plant, sec: dict[str, str]
) -> None:
    got = effective(client, sec, "press-1/temp")["press-1/temp"]
    assert (got["residency"], got["residency_from"]) == (None, None)  # no constraint
    assert put(client, sec, "tenant", residency="eu").json() == {"old": None, "new": "eu"}
    got = effective(client, sec, "press-1/temp", "loose/x")
    assert got["press-1/temp"]["residency"] == "eu"
    assert got["loose/x"]["residency_from"] == "tenant"
    assert put(client, sec, f"assets/{plant.site}", residency="cn").status_code == 200
    assert put(client, sec, f"assets/{plant.line}", residency="cn-east").status_code == 200
    got = effective(client, sec, "press-1/temp")["press-1/temp"]
    assert (got["residency"], got["residency_from"]) == ("cn-east", f"asset:{plant.line}:line-1")
    assert put(client, sec, "devices/press-1", residency="de").status_code == 200
    assert put(client, sec, "signals/press-1/force", residency="us").status_code == 200
    got = effective(client, sec, "press-1/temp", "press-1/force", "loose/x")
    assert got["press-1/temp"]["residency"] == "de"
    assert got["press-1/force"]["residency"] == "us"
    assert got["loose/x"]["residency"] == "eu"
    # Clearing the device's label falls back to the nearest asset again.
    assert put(client, sec, "devices/press-1").json()["old"]["residency"] == "de"
    assert effective(client, sec, "press-1/temp")["press-1/temp"]["residency"] == "cn-east"


def test_bulk_effective_labels_use_a_bounded_number_of_queries(
    platform: Platform, acme: Tenant
) -> None:
    reg, t = platform.registry, acme.info.id
    ent = reg.create_asset(t, "enterprise", "e")
    site = reg.create_asset(t, "site", "s", ent.id)
    area = reg.create_asset(t, "area", "a", site.id)
    reg.create_device_type(t, "plc", [SignalSpec(f"s{i}") for i in range(100)])
    for d in range(10):
        reg.create_device(t, f"d{d}", "plc", area.id)
    svc = LabelService(reg)
    svc.set_asset(t, site.id, Labels(Classification.IMPORTANT, True, "cn"))
    ids = [s.id for s in reg.list_signals(t)]
    assert len(ids) == 1000
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def selects(n: int) -> int:
        statements.clear()
        event.listen(reg.engine, "before_cursor_execute", count)
        try:
            labels = svc.effective(t, ids[:n])
        finally:
            event.remove(reg.engine, "before_cursor_execute", count)
        assert len(labels) == n
        assert all(
            (e.classification, e.personal_data, e.residency) == ("important", True, "cn")
            for e in labels.values()
        )
        return sum(s.lstrip().upper().startswith("SELECT") for s in statements)

    assert selects(1000) <= 3, statements
    assert selects(1000) == selects(10)  # not one query per signal


def test_label_changes_need_labels_write(
    client: TestClient, plant: Plant, acme: Tenant, user_headers: UserHeaders
) -> None:
    eng = user_headers(Role.ENGINEER, acme.info.id)
    for path in (f"assets/{plant.site}", "devices/press-1", "signals/press-1/temp"):
        r = put(client, eng, path, classification="general")
        assert r.status_code == 403, (path, r.text)
        assert "labels.write" in r.json()["error"]["message"]
    assert put(client, eng, "tenant", residency="eu").status_code == 403
    # The tenant admin writes the registry but does not set labels either.
    assert put(client, acme.key_headers, "devices/press-1", personal_data=True).status_code == 403
    assert put(client, eng, "tenant", residency="eu").status_code == 403


def test_patching_a_signals_classification_needs_labels_write(
    client: TestClient, platform: Platform, plant: Plant, acme: Tenant, user_headers: UserHeaders
) -> None:
    eng = user_headers(Role.ENGINEER, acme.info.id)
    platform.registry.update_signal(acme.info.id, "press-1/temp", classification="important")
    r = client.patch(
        "/api/v1/signals/press-1/temp", json={"classification": "general"}, headers=eng
    )
    assert r.status_code == 403, r.text
    assert "labels.write" in r.json()["error"]["message"]
    signal = platform.registry.get_signal(acme.info.id, "press-1/temp")
    assert signal.classification == "important"
    assert signal.unit == ""
    # Other fields, and a classification left as it is, stay the engineer's to change.
    r = client.patch(
        "/api/v1/signals/press-1/temp",
        json={"unit": "degC", "classification": "important"},
        headers=eng,
    )
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == "degC"


def test_every_label_change_is_audited_with_old_and_new_values(
    client: TestClient, platform: Platform, plant: Plant, acme: Tenant, sec: dict[str, str]
) -> None:
    assert put(client, sec, f"assets/{plant.site}", classification="core").status_code == 200
    body = {"classification": "important", "personal_data": True, "residency": "cn"}
    r = put(client, sec, "signals/press-1/temp", **body)
    assert r.json()["old"] == {
        "classification": "general",
        "personal_data": None,
        "residency": None,
    }
    assert put(client, sec, "tenant", residency="cn").status_code == 200
    recs = platform.audit.records(AuditFilter(tenant_id=acme.info.id, action="labels.set"))
    by_object = {r.object: r for r in recs}
    assert set(by_object) == {f"asset:{plant.site}", "signal:press-1/temp", "tenant"}
    site = by_object[f"asset:{plant.site}"]
    assert site.details["old"]["classification"] is None
    assert site.details["new"]["classification"] == "core"
    assert site.role == "security_admin"
    sig = by_object["signal:press-1/temp"]
    assert sig.details["new"] == body
    assert by_object["tenant"].details == {
        **by_object["tenant"].details,
        "old": {"residency": None},
        "new": {"residency": "cn"},
    }


def test_objects_of_another_tenant_are_not_found(
    client: TestClient,
    platform: Platform,
    plant: Plant,
    make_tenant: Any,
    user_headers: UserHeaders,
) -> None:
    beta = make_tenant("beta")
    beta_sec = user_headers(Role.SECURITY_ADMIN, beta.info.id)
    for path in (f"assets/{plant.site}", "devices/press-1", "signals/press-1/temp"):
        r = put(client, beta_sec, path, classification="general")
        assert r.status_code == 404, (path, r.text)
    missing = put(client, beta_sec, "assets/999999", classification="general")
    assert missing.status_code == 404
    r = client.get("/api/v1/labels/effective", params={"signal": "press-1/temp"}, headers=beta_sec)
    assert r.status_code == 404


def test_invalid_labels_are_rejected_naming_the_field(
    client: TestClient, plant: Plant, sec: dict[str, str]
) -> None:
    for body, field in (
        ({"classification": "secret"}, "classification"),
        ({"residency": "EU!"}, "residency"),
        ({"personal_data": "yes"}, "personal_data"),
        ({"colour": "red"}, "colour"),
    ):
        r = put(client, sec, f"assets/{plant.site}", **body)
        assert r.status_code == 422, (body, r.text)
        assert field in (r.json()["error"]["field"] or ""), r.json()


def test_hidden_signals_answer_as_unknown_ones(
    client: TestClient, platform: Platform, acme: Tenant, plant: Plant, user_headers: UserHeaders
) -> None:
    # A security admin bound to the line sees press-1 (on the machine below it) only.
    reg, t = platform.registry, acme.info.id
    reg.create_device(t, "other", asset_id=plant.site)
    reg.create_signal(t, "other", SignalSpec("temp"))
    scoped = user_headers(Role.SECURITY_ADMIN, t, plant.line)

    def get(*keys: str) -> Any:
        return client.get(
            "/api/v1/labels/effective", params=[("signal", k) for k in keys], headers=scoped
        )

    hidden = get("press-1/temp", "other/temp", "nowhere/x")
    ghost = get("press-1/temp", "ghost/temp", "nowhere/x")
    assert hidden.status_code == ghost.status_code == 404, (hidden.text, ghost.text)
    assert ghost.json()["error"]["message"] == "unknown signals: ghost/temp, nowhere/x"
    assert hidden.json()["error"]["message"] == "unknown signals: other/temp, nowhere/x"
    assert get("press-1/temp").status_code == 200
    # Setting labels: the same answer for a hidden signal as for an unknown one.
    r_hidden = put(client, scoped, "signals/other/temp", classification="core")
    r_ghost = put(client, scoped, "signals/ghost/temp", classification="core")
    assert r_hidden.status_code == r_ghost.status_code == 404
    assert (
        r_hidden.json()["error"]["message"].replace("other", "ghost")
        == (r_ghost.json()["error"]["message"])
    )
    assert reg.get_signal(t, "other/temp").classification == "general"
    assert put(client, scoped, "signals/press-1/temp", classification="core").status_code == 200
