"""Alarm actions against real components: a local HTTP server, aiosmtpd, the egress policy."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput, Forbidden
from shopfloor.core.hooks import ACTIONS_GROUP, hookimpl, plugin_manager
from shopfloor.core.types import Classification
from shopfloor.registry import SignalSpec
from shopfloor.rules.actions import (
    BUILTIN_KINDS,
    Action,
    ActionDeps,
    action_classes,
    build_action,
)
from shopfloor.rules.actions.command import CommandAction
from shopfloor.rules.actions.email import EmailAction
from shopfloor.rules.actions.mqtt import MqttAction
from shopfloor.rules.actions.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookAction,
    verify_signature,
)
from shopfloor.rules.alarm_history import event_to_row
from shopfloor.rules.alarms import AlarmEvent, AlarmState, Cause, Priority
from shopfloor.security.egress import EgressPolicy
from shopfloor.security.labels import Labels, LabelService
from tests.services import free_port

SECRET = "s3cret-s3cret-s3cret"
EVENT = AlarmEvent(
    ts=1_700_000_000_123_000_000,
    alarm_id="overtemp/press-01",
    from_state=AlarmState.NORMAL,
    to_state=AlarmState.UNACK_ACTIVE,
    cause=Cause.CONDITION_ACTIVE,
    user=None,
    comment=None,
    value=97.5,
    area="plant/hall-1",
    priority=Priority.HIGH,
)


# --- a real local HTTP receiver ---------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.got.append(Received(dict(self.headers.items()), body, time.time()))
            status, headers = rec.script.pop(0) if rec.script else (200, {})
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, s: float) -> None:
        self.calls.append(s)


def allow(destination: str, signal_ids: Any) -> None:
    return None


def webhook(url: str, sleeps: Sleeps | None = None, **cfg: Any) -> WebhookAction:
    return WebhookAction(
        {"url": url, "secret": SECRET, "timeout_s": 5, **cfg},
        allow,
        sleep=sleeps,
        jitter=lambda: 1.0,
    )


def run(action: Action, event: Any = EVENT, ids: tuple[int, ...] = (1,)) -> Any:
    return asyncio.run(action.run(event, signal_ids=ids))


# --- plugins ------------------------------------------------------------------------------


def test_the_plugin_manager_finds_the_four_builtins_through_entry_points() -> None:
    names = {ep.name for ep in entry_points(group=ACTIONS_GROUP)}
    assert set(BUILTIN_KINDS) <= names
    pm = plugin_manager()
    assert set(BUILTIN_KINDS) <= {name for name, _ in pm.list_name_plugin()}
    classes = action_classes(pm)
    assert classes["webhook"] is WebhookAction
    assert classes["email"] is EmailAction
    assert classes["mqtt"] is MqttAction
    assert classes["command"] is CommandAction


def test_a_third_party_plugin_registers_like_a_builtin_and_clashes_are_refused() -> None:
    class Teams(MqttAction):
        kind = "teams"

    pm = plugin_manager()
    pm.register(SimpleNamespace(shopfloor_alarm_actions=hookimpl(lambda: {"teams": Teams})))
    assert action_classes(pm)["teams"] is Teams
    pm.register(SimpleNamespace(shopfloor_alarm_actions=hookimpl(lambda: {"mqtt": Teams})))
    with pytest.raises(ValueError, match="'mqtt'"):
        action_classes(pm)


# --- webhook ------------------------------------------------------------------------------


def test_the_webhook_signature_verifies_at_the_receiver(receiver: Receiver) -> None:
    result = run(webhook(receiver.url))
    assert result.ok, result
    assert (result.attempts, result.status) == (1, 200)
    (req,) = receiver.got
    ts, sig = req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER]
    assert sig.startswith("sha256=")
    assert abs(int(ts) - time.time()) < 10
    assert verify_signature(SECRET, req.body, ts, sig)
    assert json.loads(req.body) == {"type": "shopfloor.alarm_event", "event": event_to_row(EVENT)}
    # Tampered body, another secret, a replayed (old) or altered timestamp: all refused.
    assert not verify_signature(SECRET, req.body + b" ", ts, sig)
    assert not verify_signature("another-secret-value", req.body, ts, sig)
    assert not verify_signature(SECRET, req.body, ts, sig, now=int(ts) + 301)
    assert not verify_signature(SECRET, req.body, str(int(ts) + 1), sig)


def test_the_webhook_retries_503_with_backoff_then_succeeds(receiver: Receiver) -> None:
    receiver.script = [(503, {}), (503, {})]
    sleeps = Sleeps()
    result = run(webhook(receiver.url, sleeps, backoff_s=0.5))
    assert result.ok
    assert result.attempts == 3
    assert len(receiver.got) == 3
    assert sleeps.calls == [0.5, 1.0]  # exponential; jitter pinned at its top
    assert len({r.headers[DELIVERY_HEADER] for r in receiver.got}) == 1
    for r in receiver.got:
        assert verify_signature(
            SECRET, r.body, r.headers[TIMESTAMP_HEADER], r.headers[SIGNATURE_HEADER]
        )


def test_backoff_jitter_stays_between_half_and_all_of_the_delay(receiver: Receiver) -> None:
    receiver.script = [(500, {})] * 3
    sleeps = Sleeps()
    action = WebhookAction(
        {"url": receiver.url, "secret": SECRET, "retries": 3, "backoff_s": 1.0, "max_delay_s": 3},
        allow,
        sleep=sleeps,
        jitter=lambda: 0.0,
    )
    assert run(action).ok
    assert sleeps.calls == [0.5, 1.0, 1.5]  # 1, 2, min(4, 3) halved


def test_the_webhook_does_not_retry_a_400(receiver: Receiver) -> None:
    receiver.script = [(400, {})]
    sleeps = Sleeps()
    result = run(webhook(receiver.url, sleeps))
    assert not result.ok
    assert (result.attempts, result.status, result.reason) == (1, 400, "HTTP 400")
    assert len(receiver.got) == 1
    assert sleeps.calls == []


def test_the_webhook_does_not_follow_redirects(receiver: Receiver) -> None:
    receiver.script = [(302, {"Location": "http://127.0.0.1:1/elsewhere"})]
    result = run(webhook(receiver.url, Sleeps()))
    assert (result.ok, result.status, len(receiver.got)) == (False, 302, 1)


def test_the_webhook_honours_retry_after(receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "0"})]
    sleeps = Sleeps()
    result = run(webhook(receiver.url, sleeps, backoff_s=0.5))
    assert result.ok
    assert sleeps.calls == [7.0, 1.0]  # at least what the server asked, else the backoff
    # A server asking for more than max_delay_s ends the delivery instead of hanging on.
    receiver.script = [(503, {"Retry-After": "3600"})]
    sleeps = Sleeps()
    result = run(webhook(receiver.url, sleeps, max_delay_s=60))
    assert not result.ok
    assert "Retry-After 3600" in result.reason
    assert sleeps.calls == []


def test_the_webhook_retries_connection_errors() -> None:
    sleeps = Sleeps()
    result = run(webhook(f"http://127.0.0.1:{free_port()}/hook", sleeps, retries=2))
    assert not result.ok
    assert result.attempts == 3
    assert result.status is None
    assert "ConnectError" in result.reason
    assert len(sleeps.calls) == 2


@pytest.fixture
def egress(tmp_path: Path) -> Iterator[tuple[EgressPolicy, int, dict[str, int]]]:
    plat = Platform(Settings(data_dir=tmp_path / "data", mqtt_mode="off"))
    try:
        reg = plat.registry
        info, _ = reg.create_tenant("acme")
        reg.create_device(info.id, "press-01")
        ids = {
            n: reg.create_signal(info.id, "press-01", SignalSpec(n)).id for n in ("temp", "recipe")
        }
        LabelService(reg).set_signal(info.id, "press-01/recipe", Labels(Classification.CORE))
        yield EgressPolicy(reg, plat.settings, plat.audit), info.id, ids
    finally:
        plat.close()


def test_an_egress_refusal_never_sends(
    receiver: Receiver, egress: tuple[EgressPolicy, int, dict[str, int]]
) -> None:
    policy, tenant_id, ids = egress
    calls: list[tuple[str, list[int]]] = []

    def check(destination: str, signal_ids: Any) -> object:
        calls.append((destination, list(signal_ids)))
        return policy.check_local(
            tenant_id, "rules:overtemp", "webhook", destination, None, signal_ids
        )

    action = WebhookAction({"url": receiver.url, "secret": SECRET}, check, sleep=Sleeps())
    refused = asyncio.run(action.run(EVENT, signal_ids=[ids["temp"], ids["recipe"]]))
    assert not refused.ok
    assert refused.attempts == 0
    assert "press-01/recipe" in refused.reason
    assert "core" in refused.reason
    assert receiver.got == []
    assert calls == [(receiver.url, [ids["temp"], ids["recipe"]])]
    # No signals named: nothing the policy could decide on, so nothing leaves.
    assert not asyncio.run(action.run(EVENT)).ok
    assert receiver.got == []
    # General data goes out.
    assert asyncio.run(action.run(EVENT, signal_ids=[ids["temp"]])).ok
    assert len(receiver.got) == 1


def test_a_failing_or_negative_check_fails_closed(receiver: Receiver) -> None:
    def broken(destination: str, signal_ids: Any) -> None:
        raise RuntimeError("database gone")

    for check in (broken, lambda d, s: False, lambda d, s: SimpleNamespace(allowed=False)):
        result = run(WebhookAction({"url": receiver.url, "secret": SECRET}, check))
        assert not result.ok
        assert result.reason.startswith("egress refused")

    async def forbid(destination: str, signal_ids: Any) -> None:
        raise Forbidden("not today")

    assert "not today" in run(WebhookAction({"url": receiver.url, "secret": SECRET}, forbid)).reason
    assert receiver.got == []


# --- e-mail -------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.mail: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, policy=policy.default),
            )
        )
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def test_the_email_arrives_with_the_alarm_in_subject_and_body(smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    action = build_action(
        "email",
        {
            "host": "127.0.0.1",
            "port": port,
            "sender": "alarms@plant.example",
            "to": ["ops@plant.example", "shift@plant.example"],
        },
        ActionDeps(egress_check=allow),
    )
    result = run(action)
    assert result.ok, result
    ((sender, rcpts, msg),) = inbox.mail
    assert sender == "alarms@plant.example"
    assert rcpts == ["ops@plant.example", "shift@plant.example"]
    assert msg["Subject"] == (
        "[shopfloor] high alarm overtemp/press-01: unack_active (condition_active)"
    )
    body = msg.get_payload(decode=True).decode()
    for line in (
        "time: 2023-11-14T22:13:20.123+00:00",
        "alarm_id: overtemp/press-01",
        "to_state: unack_active",
        "value: 97.5",
        "area: plant/hall-1",
        "priority: 2",
    ):
        assert line in body.splitlines()


def test_an_email_is_an_egress_and_a_refusal_sends_nothing(
    smtp: tuple[int, Inbox], egress: tuple[EgressPolicy, int, dict[str, int]]
) -> None:
    port, inbox = smtp
    policy, tenant_id, ids = egress
    calls: list[str] = []

    def check(destination: str, signal_ids: Any) -> object:
        calls.append(destination)
        return policy.check_local(
            tenant_id, "rules:overtemp", "email", destination, None, signal_ids
        )

    cfg = {"host": "127.0.0.1", "port": port, "sender": "a@plant.example", "to": ["o@x.example"]}
    action = build_action("email", cfg, ActionDeps(egress_check=check))
    refused = run(action, ids=(ids["temp"], ids["recipe"]))
    assert not refused.ok
    assert refused.attempts == 0
    assert "press-01/recipe" in refused.reason
    assert not run(action, ids=()).ok  # no signals named: nothing the policy could decide on
    assert inbox.mail == []
    assert calls == [f"mailto:o@x.example?via=smtp://127.0.0.1:{port}"]
    assert run(action, ids=(ids["temp"],)).ok  # general data goes out
    assert len(inbox.mail) == 1
    with pytest.raises(ValueError, match="needs an egress check"):
        build_action("email", cfg, ActionDeps())


def test_an_unreachable_smtp_server_is_a_failed_result() -> None:
    action = EmailAction(
        {"host": "127.0.0.1", "port": free_port(), "sender": "a@b.example", "to": ["c@d.example"]},
        allow,
    )
    result = run(action)
    assert not result.ok
    assert "Connection" in result.reason or "refused" in result.reason


# --- mqtt and command ---------------------------------------------------------------------


def test_mqtt_publishes_the_event_as_json() -> None:
    sent: list[tuple[str, bytes, int]] = []

    async def publish(topic: str, payload: bytes, qos: int) -> None:
        sent.append((topic, payload, qos))

    action = build_action("mqtt", {"topic": "acme/alarms", "qos": 2}, ActionDeps(publish=publish))
    assert run(action).ok
    ((topic, payload, qos),) = sent
    assert (topic, qos) == ("acme/alarms", 2)
    assert json.loads(payload)["event"] == event_to_row(EVENT)

    async def down(topic: str, payload: bytes, qos: int) -> None:
        raise RuntimeError("the MQTT endpoint is not running")

    result = run(MqttAction({"topic": "acme/alarms"}, down))
    assert not result.ok
    assert "not running" in result.reason


def test_the_command_action_sends_its_setpoint_and_reports_the_answer() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    answers: list[Any] = [{"ok": True, "value": 0}, {"ok": False, "message": "interlocked"}]

    async def command(device: str, payload: dict[str, Any]) -> dict[str, Any]:
        sent.append((device, payload))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    cfg = {"device": "press-01", "signal": "heater", "value": False}
    action = build_action("command", cfg, ActionDeps(command=command))
    done = run(action)
    assert (done.ok, done.response) == (True, {"ok": True, "value": 0})
    refused = run(action)
    assert (refused.ok, refused.reason) == (False, "interlocked")
    answers.append(TimeoutError("no answer within 5 s"))
    assert run(action).reason == "TimeoutError: no answer within 5 s"
    assert sent == [("press-01", {"signal": "heater", "value": False})] * 3


# --- configuration ------------------------------------------------------------------------

HOOK = {"url": "https://erp.example/in", "secret": SECRET}
MAIL = {"host": "smtp.example", "sender": "a@b.example", "to": ["c@d.example"]}


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("webhook", {**HOOK, "url": "ftp://erp.example/in"}, "url"),
        ("webhook", {**HOOK, "url": "https://user:pw@erp.example/in"}, "url"),
        ("webhook", {**HOOK, "secret": "short"}, "secret"),
        ("webhook", {**HOOK, "retries": "3"}, "retries"),  # strict: no string coercion
        ("webhook", {**HOOK, "retries": 11}, "retries"),
        ("webhook", {**HOOK, "verbose": True}, "verbose"),  # extra keys are refused
        ("webhook", {"secret": SECRET}, "url"),
        ("email", {**MAIL, "to": []}, "to"),
        ("email", {**MAIL, "to": ["x@y.example\r\nBcc: z@evil.example"]}, "to"),
        ("email", {**MAIL, "port": 0}, "port"),
        ("mqtt", {"topic": "acme/#"}, "topic"),
        ("mqtt", {"topic": "sf/v1/other/press-01/commands/1"}, "topic"),
        ("mqtt", {"topic": "acme/alarms", "qos": 3}, "qos"),
        ("command", {"device": "press-01", "signal": "heater"}, "value"),
        ("command", {"device": "a/+", "signal": "heater", "value": 1}, "device"),
        ("nosuch", {}, "kind"),
    ],
)
def test_a_bad_config_names_the_field(kind: str, config: dict[str, Any], field: str) -> None:
    async def publish(topic: str, payload: bytes, qos: int) -> None:
        pass

    async def command(device: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    deps = ActionDeps(egress_check=allow, publish=publish, command=command)
    with pytest.raises(BadInput) as err:
        build_action(kind, config, deps)
    assert err.value.field == field


def test_an_email_login_needs_starttls_and_both_halves() -> None:
    with pytest.raises(BadInput, match="starttls"):
        EmailAction({**MAIL, "username": "u", "password": "p"}, allow)
    with pytest.raises(BadInput, match="together"):
        EmailAction({**MAIL, "username": "u", "starttls": True}, allow)
    action = EmailAction({**MAIL, "username": "u", "password": "p", "starttls": True}, allow)
    assert "p" not in repr(action.config.password)


def test_an_action_needs_its_dependency_and_a_wellformed_event(receiver: Receiver) -> None:
    for kind, config in (
        ("webhook", HOOK),
        ("mqtt", {"topic": "a"}),
        ("command", {"device": "d", "signal": "s", "value": 1}),
    ):
        with pytest.raises(ValueError, match="needs"):
            build_action(kind, config, ActionDeps())
    bad = {**event_to_row(EVENT), "to_state": "exploded"}
    with pytest.raises(BadInput) as err:
        run(webhook(receiver.url), bad)
    assert err.value.field == "to_state"
    assert receiver.got == []
    # A valid row (as stored in the history) works like the event itself.
    assert run(webhook(receiver.url), event_to_row(EVENT)).ok
