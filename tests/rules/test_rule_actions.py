"""Actions attached to rules (rules/rule_actions.py), run live by the rules runtime, and the
engineer's alarm states suppressed by design and out of service, over the real app.

Webhooks go to a real local HTTP receiver and are verified with the receiver's own signature
check; the platform's egress policy decides each delivery and the audit log records it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopfloor.core.timeutil import now_ns
from shopfloor.core.types import Classification
from shopfloor.rules.actions.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from shopfloor.rules.rule_actions import MASK
from shopfloor.security.audit import AuditFilter
from shopfloor.security.labels import Labels, LabelService
from shopfloor.security.roles import Role
from tests.rules.test_actions import SECRET, Receiver, receiver  # noqa: F401 - the fixture
from tests.rules.test_runtime import V1, World, _ingest, _make, _wait


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    yield from _make(tmp_path)


def hook_rule(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "hot",
        "device": "press-01",
        "priority": 2,
        "definition": {"kind": "threshold", "signal": "temp", "limit": 80},
        "actions": [
            {
                "kind": "webhook",
                "config": {"url": url, "secret": SECRET, "retries": 0},
                "on": ["activated", "cleared"],
            }
        ],
        **extra,
    }


def _audit_actions(w: World) -> list[Any]:
    return [
        e
        for e in w.platform.audit.records(AuditFilter(tenant_id=w.tenants["acme"]), None)
        if e.action == "alarm.action"
    ]


# -- save time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ({"kind": "pager", "config": {}}, "actions[0].kind"),
        ({"kind": "webhook", "config": {"url": "ftp://x", "secret": SECRET}}, "config.url"),
        ({"kind": "webhook", "config": {"url": "http://h/x"}}, "config.secret"),
        ({"kind": "mqtt", "config": {"topic": "sf/v1/acme/press-01/commands/1"}}, "topic"),
        ({"kind": "mqtt", "config": {"topic": "andon"}, "on": ["acknowledged"]}, "on"),
        ({"kind": "mqtt", "config": {"topic": "andon"}, "extra": 1}, "extra"),
    ],
)
def test_a_bad_action_is_refused_at_save_time_naming_the_field(
    w: World, action: dict[str, Any], field: str
) -> None:
    h = w.headers("acme")
    body = hook_rule("http://127.0.0.1:9/x")
    body["actions"] = [action]
    r = w.client.post(f"{V1}/rules", json=body, headers=h)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert field in (err.get("field") or "") + err["message"], err
    assert w.client.get(f"{V1}/rules", headers=h).json()["rules"] == []  # nothing stored


def test_secrets_read_back_masked_and_a_masked_write_keeps_them(w: World) -> None:
    h = w.headers("acme")
    r = w.client.post(f"{V1}/rules", json=hook_rule("http://127.0.0.1:9/x"), headers=h)
    assert r.status_code == 201, r.text
    shown = r.json()["actions"][0]
    assert shown["config"]["secret"] == MASK
    assert SECRET not in r.text
    assert shown["on"] == ["activated", "cleared"]
    # Read, change the limit, write back as read: the secret stays the stored one.
    body = {k: v for k, v in r.json().items() if k in ("device", "priority", "message")}
    body["definition"] = {"kind": "threshold", "signal": "temp", "limit": 90}
    body["actions"] = [shown]
    r = w.client.put(f"{V1}/rules/hot", json=body, headers=h)
    assert r.status_code == 200, r.text
    (stored,) = w.platform.rules.get(w.tenants["acme"], "hot").actions
    assert stored.config["secret"] == SECRET
    # A new secret replaces it.
    body["actions"] = [{**shown, "config": {**shown["config"], "secret": "x" * 20}}]
    assert w.client.put(f"{V1}/rules/hot", json=body, headers=h).status_code == 200
    (stored,) = w.platform.rules.get(w.tenants["acme"], "hot").actions
    assert stored.config["secret"] == "x" * 20


def test_a_masked_secret_never_follows_a_changed_destination(w: World) -> None:
    h = w.headers("acme")
    body = hook_rule("http://127.0.0.1:9/a")
    body["actions"].append(
        {"kind": "webhook", "config": {"url": "http://127.0.0.1:9/b", "secret": "b" * 20}}
    )
    r = w.client.post(f"{V1}/rules", json=body, headers=h)
    assert r.status_code == 201, r.text
    shown = r.json()
    put = {k: shown[k] for k in ("device", "priority", "message")}
    put["definition"] = {"kind": "threshold", "signal": "temp", "limit": 80}
    # Pointed at another server with the mask: refused, the stored secret stays where it was.
    moved = [dict(a) for a in shown["actions"]]
    moved[0] = {**moved[0], "config": {**moved[0]["config"], "url": "http://evil.example/x"}}
    r = w.client.put(f"{V1}/rules/hot", json={**put, "actions": moved}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "actions[0].config.secret"
    # Reordered: each secret stays with its own URL.
    r = w.client.put(
        f"{V1}/rules/hot", json={**put, "actions": list(reversed(shown["actions"]))}, headers=h
    )
    assert r.status_code == 200, r.text
    stored = {
        a.config["url"]: a.config["secret"]
        for a in w.platform.rules.get(w.tenants["acme"], "hot").actions
    }
    assert stored == {"http://127.0.0.1:9/a": SECRET, "http://127.0.0.1:9/b": "b" * 20}
    # A new rule cannot be created with a mask (an import of an export into a fresh folder).
    fresh = hook_rule("http://127.0.0.1:9/c", name="other")
    fresh["actions"][0]["config"]["secret"] = MASK
    r = w.client.post(f"{V1}/rules", json=fresh, headers=h)
    assert r.status_code == 422
    assert "masked secret" in r.json()["error"]["message"]


def test_a_command_action_needs_commands_send_and_a_device_in_reach(w: World) -> None:
    body = hook_rule("http://127.0.0.1:9/x")
    body["actions"] = [
        {"kind": "command", "config": {"device": "press-01", "signal": "stop", "value": 1}}
    ]
    # A token scoped to rules.write alone may not make the platform send commands later.
    acme = w.tenants["acme"]
    user = w.platform.auth.create_user(
        acme, "eng-scoped", "correct-horse-battery-9", [(Role.ENGINEER, None)]
    )
    _, token = w.platform.auth.issue_token(user.id, "t", scopes=["rules.write", "registry.read"])
    r = w.client.post(f"{V1}/rules", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    h = w.headers("acme")
    body["actions"][0]["config"]["device"] = "press-99"
    r = w.client.post(f"{V1}/rules", json=body, headers=h)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "device 'press-99' not found"
    body["actions"][0]["config"]["device"] = "press-01"
    assert w.client.post(f"{V1}/rules", json=body, headers=h).status_code == 201


# -- run time -------------------------------------------------------------------------------


def test_an_alarm_runs_its_webhook_signed_on_activation_and_clear(
    w: World,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> None:
    h = w.headers("acme")
    assert w.client.post(f"{V1}/rules", json=hook_rule(receiver.url), headers=h).status_code == 201
    t0 = now_ns()
    _ingest(w, h, 20.0, t0)
    _ingest(w, h, 95.0, t0 + 1000)
    _wait(lambda: len(receiver.got) >= 1, "the webhook on activation")
    _ingest(w, h, 30.0, t0 + 2000)
    _wait(lambda: len(receiver.got) >= 2, "the webhook on clear")
    events = []
    for req in receiver.got:
        ts, sig = req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER]
        assert verify_signature(SECRET, req.body, ts, sig)
        events.append(json.loads(req.body)["event"])
    assert [(e["to_state"], e["value"]) for e in events] == [
        ("unack_active", 95.0),
        ("unack_rtn", 30.0),
    ]
    audited = _wait(lambda: len(_audit_actions(w)) >= 2 and _audit_actions(w), "the audit")
    assert {(a.outcome, a.actor, a.details["kind"]) for a in audited} == {
        ("ok", "rule:hot", "webhook")
    }
    assert w.platform.runtime.actions_ok == 2


def test_a_shelved_alarm_notifies_no_one(
    w: World,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> None:
    h = w.headers("acme")
    assert w.client.post(f"{V1}/rules", json=hook_rule(receiver.url), headers=h).status_code == 201
    t0 = now_ns()
    _ingest(w, h, 95.0, t0)
    _wait(lambda: receiver.got, "the first webhook")
    ack = {"comment": "seen"}
    assert w.client.post(f"{V1}/alarms/hot/press-01/ack", json=ack, headers=h).status_code == 200
    _ingest(w, h, 20.0, t0 + 1000)  # back to normal: a 'cleared' notification
    _wait(lambda: len(receiver.got) >= 2, "the clear webhook")
    shelve = {"duration": "1h", "comment": "sensor being replaced"}
    r = w.client.post(f"{V1}/alarms/hot/press-01/shelve", json=shelve, headers=h)
    assert r.status_code == 200, r.text
    _ingest(w, h, 99.0, t0 + 2000)  # active again, but shelved
    _wait(
        lambda: w.platform.alarms.get(w.tenants["acme"], "hot", "press-01").alarm.active,
        "the condition tracked while shelved",
    )
    _ingest(w, h, 99.5, t0 + 3000)
    _wait(lambda: w.platform.runtime.batches >= 4, "the runtime to see every batch")
    assert len(receiver.got) == 2


def test_an_egress_refusal_is_a_failed_action_and_nothing_is_sent(
    w: World,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> None:
    acme = w.tenants["acme"]
    LabelService(w.platform.registry).set_signal(acme, "press-01/temp", Labels(Classification.CORE))
    h = w.headers("acme")
    assert w.client.post(f"{V1}/rules", json=hook_rule(receiver.url), headers=h).status_code == 201
    _ingest(w, h, 95.0)
    failed = _wait(lambda: w.platform.runtime.actions_failed, "the refused action")
    assert failed == 1
    assert receiver.got == []
    (audited,) = _wait(lambda: _audit_actions(w), "the audit record")
    assert audited.outcome == "failed"
    assert "egress" in audited.details["reason"]


def test_actions_follow_operator_actions_and_skip_old_data(
    w: World,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> None:
    h = w.headers("acme")
    assert w.client.post(f"{V1}/rules", json=hook_rule(receiver.url), headers=h).status_code == 201
    # An alarm raised from an hour-old reading (a buffer replay): stored, but no action runs.
    _ingest(w, h, 95.0, now_ns() - 3600 * 10**9)
    _wait(
        lambda: any(a.alarm.active for a in w.platform.alarms.list_alarms(w.tenants["acme"])),
        "the alarm from old data",
    )
    _wait(lambda: w.platform.runtime.actions_skipped_old == 1, "the skipped action")
    assert receiver.got == []
    url = f"{V1}/alarms/hot/press-01"
    with w.client.websocket_connect(f"{V1}/alarms/live", headers=h) as ws:
        # Out of service, then back with the condition still active: annunciated again, the
        # webhook runs and the live feed shows both changes.
        r = w.client.post(f"{url}/out-of-service", json={"comment": "probe swap"}, headers=h)
        assert r.status_code == 200, r.text
        first = ws.receive_json()
        assert (first["to_state"], first["cause"]) == ("out_of_service", "remove_from_service")
        assert w.client.post(f"{url}/return-to-service", headers=h).status_code == 200
        back = ws.receive_json()
        assert (back["to_state"], back["annunciated"]) == ("unack_active", True)
        _wait(lambda: receiver.got, "the webhook of the new annunciation")
        assert json.loads(receiver.got[0].body)["event"]["cause"] == "return_to_service"
        r = w.client.post(f"{url}/ack", json={"comment": "seen"}, headers=h)
        assert r.status_code == 200
        assert ws.receive_json()["to_state"] == "ack_active"
    assert len(receiver.got) == 1  # an acknowledgement notifies no one


# -- suppressed by design, out of service ---------------------------------------------------


def test_suppress_and_out_of_service_before_and_after_the_alarm(w: World) -> None:
    eng, op = w.headers("acme"), w.headers("acme", Role.OPERATOR)
    rule = hook_rule("http://127.0.0.1:9/x")
    del rule["actions"]
    assert w.client.post(f"{V1}/rules", json=rule, headers=eng).status_code == 201
    url = f"{V1}/alarms/hot/press-01"
    # Operators acknowledge and shelve; taking an alarm away is an engineer's decision.
    assert w.client.post(f"{url}/suppress", json={"reason": "x"}, headers=op).status_code == 403
    # Before the alarm ever fired: suppressed by design at once.
    r = w.client.post(f"{url}/suppress", json={"reason": "line in changeover"}, headers=eng)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "suppressed_by_design"
    _ingest(w, eng, 95.0)
    _wait(
        lambda: w.platform.alarms.get(w.tenants["acme"], "hot", "press-01").alarm.active,
        "the condition tracked while suppressed",
    )
    assert w.platform.alarms.get(w.tenants["acme"], "hot", "press-01").alarm.state.value == (
        "suppressed_by_design"
    )
    # Unsuppressed with the condition active: annunciated now.
    r = w.client.post(f"{url}/unsuppress", json={}, headers=eng)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "unack_active"
    # Out of service wants a comment; then again hidden until returned.
    assert w.client.post(f"{url}/out-of-service", json={}, headers=eng).status_code == 422
    r = w.client.post(f"{url}/out-of-service", json={"comment": "probe broken"}, headers=eng)
    assert r.status_code == 200
    assert r.json()["state"] == "out_of_service"
    r = w.client.post(f"{url}/unsuppress", json={}, headers=eng)
    assert r.status_code == 409  # not suppressed: the state machine says why
    r = w.client.post(f"{url}/return-to-service", headers=eng)
    assert r.status_code == 200
    assert r.json()["state"] == "unack_active"
    causes = [
        e.event.cause.value
        for e in w.platform.alarms.history(w.tenants["acme"], rule="hot", device="press-01")
    ]
    for cause in ("suppress_by_design", "unsuppress", "remove_from_service", "return_to_service"):
        assert cause in causes
    # Another tenant's alarm (and an unknown device) answer as not found.
    other = w.headers("other")
    r = w.client.post(f"{url}/suppress", json={"reason": "x"}, headers=other)
    assert r.status_code == 404
    r = w.client.post(f"{V1}/alarms/hot/press-77/suppress", json={"reason": "x"}, headers=eng)
    assert r.status_code == 404
