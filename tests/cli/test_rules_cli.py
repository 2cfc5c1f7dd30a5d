"""``shopfloor rules`` and ``shopfloor alarms`` through the real CLI app on a real data folder.

Rules and alarms are checked afterwards through RuleStore / AlarmStore on the same registry,
audit records through the AuditLog; alarms are raised by feeding engine events through
AlarmStore.apply, as the rules runtime does.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from shopfloor.cli.main import app
from shopfloor.cli.rules import alarms_app, rules_app
from shopfloor.core.config import load_settings
from shopfloor.core.kinds import DataType
from shopfloor.core.timeutil import now_ns
from shopfloor.registry.service import Registry, SignalSpec
from shopfloor.rules.alarms import AlarmState
from shopfloor.rules.model import Event
from shopfloor.rules.rule_actions import MASK
from shopfloor.rules.store import AlarmStore, RuleStore
from shopfloor.security.audit import AuditFilter, AuditLog

SECRET = "whsec-0123456789abcdef"
ACTOR = f"cli:{getpass.getuser()}"
HOT_YAML = f"""\
- name: hot
  device_type: press
  priority: 2
  message: Press too hot
  definition: {{kind: threshold, signal: temp, limit: 80}}
  actions:
    - kind: webhook
      config: {{url: "https://mes.example/alarms", secret: "{SECRET}"}}
      on: [activated, cleared]
- name: running
  device: press-01
  definition:
    kind: expression
    expression: run and temp > 20
"""
COLD = {
    "name": "cold",
    "device": "press-02",
    "priority": 4,
    "definition": {"kind": "threshold", "signal": "temp", "limit": 5, "direction": "low"},
}


@dataclass
class Stores:
    registry: Registry
    rules: RuleStore
    alarms: AlarmStore
    audit: AuditLog
    tenant_id: int


@dataclass
class World:
    data: Path
    tmp: Path

    def cli(self, *args: str, input: str | None = None, tenant: str = "acme") -> Result:
        return CliRunner().invoke(
            app, [*args, "--tenant", tenant, "-d", str(self.data)], input=input
        )

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    @contextmanager
    def stores(self) -> Iterator[Stores]:
        settings = load_settings(None, data_dir=self.data)
        reg = Registry(settings.resolved_registry_url())
        try:
            tid = reg.get_tenant("acme").id
            yield Stores(reg, RuleStore(reg), AlarmStore(reg), AuditLog(reg, settings), tid)
        finally:
            reg.close()


@pytest.fixture
def w(tmp_path: Path) -> World:
    data = tmp_path / "data"
    data.mkdir()
    reg = Registry(load_settings(None, data_dir=data).resolved_registry_url())
    reg.upgrade()
    t, _ = reg.create_tenant("acme")
    reg.create_tenant("other")
    ent = reg.create_asset(t.id, "enterprise", "works")
    site = reg.create_asset(t.id, "site", "plant", ent.id)
    area = reg.create_asset(t.id, "area", "press-shop", site.id)
    reg.create_device_type(t.id, "press", [SignalSpec("temp"), SignalSpec("run", DataType.BOOL)])
    reg.create_device(t.id, "press-01", "press", area.id)
    reg.create_device(t.id, "press-02", "press")
    reg.close()
    return World(data, tmp_path)


def _one_line(result: Result) -> str:
    return " ".join(result.output.split())


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def _audit(s: Stores, action: str) -> list[tuple[str, str, str]]:
    records = s.audit.records(AuditFilter(tenant_id=s.tenant_id), limit=None)
    return [(r.actor, r.object, r.outcome) for r in records if r.action == action]


# -- rules -------------------------------------------------------------------------------------


def test_create_from_yaml_and_from_json(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    _ok(w.cli("rules", "create", w.file("cold.json", json.dumps(COLD))))
    with w.stores() as s:
        hot = s.rules.get(s.tenant_id, "hot")
        assert (hot.kind, hot.device_type, int(hot.priority), hot.message) == (
            "threshold", "press", 2, "Press too hot",
        )  # fmt: skip
        assert hot.definition["limit"] == 80.0
        # `on:` in YAML is the key "on" (YAML 1.2 booleans), not True
        assert hot.actions[0].on == ("activated", "cleared")
        assert hot.actions[0].config["secret"] == SECRET
        assert s.rules.get(s.tenant_id, "running").definition["expression"] == "run and temp > 20"
        cold = s.rules.get(s.tenant_id, "cold")
        assert (cold.device, cold.definition["direction"], int(cold.priority)) == (
            "press-02", "low", 4,
        )  # fmt: skip
        assert {o for _, o, _ in _audit(s, "rule.create")} == {
            "rule:hot", "rule:running", "rule:cold",
        }  # fmt: skip
        assert {a for a, _, _ in _audit(s, "rule.create")} == {ACTOR}
    # stdin, JSON recognised by its first character
    stdin_rule = {**COLD, "name": "cold-2"}
    _ok(w.cli("rules", "create", "-", input=json.dumps(stdin_rule)))
    with w.stores() as s:
        assert s.rules.get(s.tenant_id, "cold-2").device == "press-02"


def test_a_bad_expression_fails_with_field_and_position_and_stores_nothing(w: World) -> None:
    bad = HOT_YAML.replace("run and temp > 20", "temp + bogus > 1")
    path = w.file("bad.yaml", bad)
    result = w.cli("rules", "create", path)
    assert result.exit_code == 1, result.output
    text = _one_line(result)
    assert f"{path}, rule 2 'running': definition.expression: column 8: unknown signal" in text
    assert "'bogus'" in text
    with w.stores() as s:
        assert s.rules.list_rules(s.tenant_id) == []  # not even the good first rule
        failed = [o for _, o, out in _audit(s, "rule.create") if out == "failed"]
        assert failed == ["rule:running"]


BAD_RULES: list[tuple[dict[str, object], str]] = [
    # the API's RuleIn model: the same field names as a 422 over HTTP
    ({**COLD, "priority": 9}, "rule 'cold': priority: Input should be less than or equal"),
    ({**COLD, "device_type": "press"}, "give exactly one of device_type or device"),
    ({**COLD, "definition": {"kind": "nope"}}, "definition: Input tag 'nope'"),
    ({**COLD, "colour": "red"}, "colour: Extra inputs are not permitted"),
    # the store's check against the tenant's devices
    ({**COLD, "device": "press-99"}, "device 'press-99' not found"),
    (
        {**COLD, "definition": {"kind": "expression", "expression": "(temp > 1) + 2"}},
        "definition.expression: column 2: type error",
    ),
    (
        {**COLD, "actions": [{"kind": "webhook", "config": {"url": "ftp://x", "secret": SECRET}}]},
        "actions[0].config.url",
    ),
    (
        {
            **COLD,
            "actions": [
                {"kind": "command", "config": {"device": "ghost", "signal": "sp", "value": 1}}
            ],
        },
        "actions[0].config.device: device 'ghost' not found",
    ),
]


def test_validate_names_the_field(w: World) -> None:
    path = w.file("rule.json", "")
    for rule, expected in BAD_RULES:
        Path(path).write_text(json.dumps(rule))
        result = w.cli("rules", "validate", path)
        assert result.exit_code == 1, result.output
        assert f"{path}, rule 'cold': " in _one_line(result)
        assert expected in _one_line(result), result.output
    with w.stores() as s:
        assert s.rules.list_rules(s.tenant_id) == []


def test_validate_checks_without_storing(w: World) -> None:
    path = w.file("rules.yaml", HOT_YAML)
    result = _ok(w.cli("rules", "validate", path))
    assert "2 rule(s) valid" in result.output
    with w.stores() as s:
        assert s.rules.list_rules(s.tenant_id) == []
    broken = w.file("broken.yaml", "- name: x\n  definition: {kind: threshold\n")
    result = w.cli("rules", "validate", broken)
    assert result.exit_code == 1
    assert f"{broken}: not valid YAML at line 3" in _one_line(result)
    not_rules = w.file("n.yaml", "- 1\n- 2\n")
    result = w.cli("rules", "validate", not_rules)
    assert result.exit_code == 1
    assert "neither a rule" in result.output


def test_replace(w: World) -> None:
    path = w.file("rules.yaml", HOT_YAML)
    _ok(w.cli("rules", "create", path))
    _ok(w.cli("rules", "disable", "running", "--reason", "commissioning"))
    changed = w.file("changed.yaml", HOT_YAML.replace("limit: 80", "limit: 90"))
    result = w.cli("rules", "create", changed)
    assert result.exit_code == 1
    assert "rule 'hot' exists already (use --replace to replace it)" in _one_line(result)
    with w.stores() as s:
        assert s.rules.get(s.tenant_id, "hot").definition["limit"] == 80.0
    result = _ok(w.cli("rules", "create", changed, "--replace"))
    assert "Rule hot replaced" in result.output
    with w.stores() as s:
        assert s.rules.get(s.tenant_id, "hot").definition["limit"] == 90.0
        running = s.rules.get(s.tenant_id, "running")
        assert not running.enabled  # replace keeps the enabled state, as PUT does
        assert running.disabled_reason == "commissioning"
        assert [o for _, o, out in _audit(s, "rule.replace") if out == "ok"] == [
            "rule:hot", "rule:running",
        ]  # fmt: skip


def test_export_then_create_replace_keeps_the_webhook_secret(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    out = w.tmp / "export.yaml"
    _ok(w.cli("rules", "export", str(out)))
    text = out.read_text()
    assert SECRET not in text
    assert MASK in text
    stdout = _ok(w.cli("rules", "export")).stdout
    assert SECRET not in stdout
    assert yaml.safe_load(stdout) == yaml.safe_load(text)
    exported = yaml.safe_load(text)
    assert [r["name"] for r in exported] == ["hot", "running"]
    # change the threshold in the exported file, write it back
    exported[0]["definition"]["limit"] = 85.0
    out.write_text(yaml.safe_dump(exported, sort_keys=False))
    _ok(w.cli("rules", "create", str(out), "--replace"))
    with w.stores() as s:
        hot = s.rules.get(s.tenant_id, "hot")
        assert hot.definition["limit"] == 85.0
        assert hot.actions[0].config["secret"] == SECRET  # the stored one, not the mask
        assert hot.actions[0].config["url"] == "https://mes.example/alarms"
    # a masked secret for a rule that does not exist yet cannot be filled in: refused
    with w.stores() as s:
        s.rules.delete(s.tenant_id, "hot")
    result = w.cli("rules", "create", str(out))
    assert result.exit_code == 1
    assert "rule 1 'hot': actions[0].config.secret" in _one_line(result)


def test_list_and_show_json(w: World) -> None:
    assert _ok(w.cli("rules", "list", "--json")).stdout.strip() == '{\n  "rules": []\n}'
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    listed = json.loads(_ok(w.cli("rules", "list", "--json")).stdout)
    assert [r["name"] for r in listed["rules"]] == ["hot", "running"]
    hot = listed["rules"][0]
    assert hot["actions"][0]["config"]["secret"] == MASK
    assert (hot["kind"], hot["device_type"], hot["priority"], hot["enabled"]) == (
        "threshold", "press", 2, True,
    )  # fmt: skip
    shown = json.loads(_ok(w.cli("rules", "show", "running", "--json")).stdout)
    assert shown["device"] == "press-01"
    assert shown["definition"]["expression"] == "run and temp > 20"
    assert SECRET not in _ok(w.cli("rules", "show", "hot")).stdout
    assert "hot" in _ok(w.cli("rules", "list")).stdout


def test_enable_and_disable(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    _ok(w.cli("rules", "disable", "hot", "--reason", "sensor swap"))
    with w.stores() as s:
        hot = s.rules.get(s.tenant_id, "hot")
        assert (hot.enabled, hot.disabled_reason) == (False, "sensor swap")
    _ok(w.cli("rules", "enable", "hot"))
    with w.stores() as s:
        hot = s.rules.get(s.tenant_id, "hot")
        assert (hot.enabled, hot.disabled_reason) == (True, None)
        assert _audit(s, "rule.disable") == [(ACTOR, "rule:hot", "ok")]
        assert _audit(s, "rule.enable") == [(ACTOR, "rule:hot", "ok")]


def test_delete_asks_and_refuses_without_an_answer(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    for answer in (None, "n\n"):
        result = w.cli("rules", "delete", "hot", input=answer)
        assert result.exit_code == 1, result.output
        assert "rule 'hot' not deleted: confirm, or pass --yes" in result.output
    with w.stores() as s:
        s.rules.get(s.tenant_id, "hot")  # still there
    _ok(w.cli("rules", "delete", "hot", input="y\n"))
    _ok(w.cli("rules", "delete", "running", "--yes"))
    with w.stores() as s:
        assert s.rules.list_rules(s.tenant_id) == []
        assert [o for _, o, _ in _audit(s, "rule.delete")] == ["rule:hot", "rule:running"]


# -- alarms ------------------------------------------------------------------------------------


def _raise_alarm(w: World, rule: str = "hot", device: str = "press-01") -> None:
    with w.stores() as s:
        s.alarms.apply(s.tenant_id, [Event(rule, device, "activated", now_ns() - 10**9, 95.0)])


def _state(w: World, rule: str = "hot", device: str = "press-01") -> AlarmState:
    with w.stores() as s:
        return s.alarms.get(s.tenant_id, rule, device).alarm.state


def test_alarm_lifecycle_from_the_cli(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    _raise_alarm(w)
    listed = json.loads(_ok(w.cli("alarms", "list", "--json")).stdout)["alarms"]
    assert [(a["rule"], a["device"], a["state"], a["value"]) for a in listed] == [
        ("hot", "press-01", "unack_active", 95.0)
    ]
    assert listed[0]["area"] == "press-shop"
    assert json.loads(_ok(w.cli("alarms", "list", "--json", "--state", "normal")).stdout) == {
        "alarms": []
    }
    assert "press-01" in _ok(w.cli("alarms", "list", "--device", "press-01")).stdout
    for prio, count in (("2", 1), ("1", 0)):
        found = json.loads(_ok(w.cli("alarms", "list", "--priority", prio, "--json")).stdout)
        assert len(found["alarms"]) == count

    _ok(w.cli("alarms", "ack", "hot", "press-01", "--comment", "coolant refilled"))
    assert _state(w) is AlarmState.ACK_ACTIVE
    # acknowledging again is a refused transition, with the store's words
    again = w.cli("alarms", "ack", "hot", "press-01", "-m", "twice")
    assert again.exit_code == 1
    assert "cannot acknowledge alarm" in again.output

    before = now_ns()
    _ok(w.cli("alarms", "shelve", "hot", "press-01", "--for", "2h", "-m", "fix on the way"))
    with w.stores() as s:
        alarm = s.alarms.get(s.tenant_id, "hot", "press-01").alarm
    assert alarm.state is AlarmState.SHELVED
    assert alarm.shelved_until is not None
    assert 0 <= alarm.shelved_until - (before + 2 * 3600 * 10**9) < 60 * 10**9
    _ok(w.cli("alarms", "unshelve", "hot", "press-01"))
    assert _state(w) is AlarmState.UNACK_ACTIVE  # back while active: acknowledge again

    _ok(w.cli("alarms", "suppress", "hot", "press-01", "--reason", "changeover"))
    assert _state(w) is AlarmState.SUPPRESSED_BY_DESIGN
    _ok(w.cli("alarms", "unsuppress", "hot", "press-01"))
    assert _state(w) is AlarmState.UNACK_ACTIVE

    _ok(w.cli("alarms", "out-of-service", "hot", "press-01", "-m", "sensor swap"))
    assert _state(w) is AlarmState.OUT_OF_SERVICE
    _ok(w.cli("alarms", "return-to-service", "hot", "press-01", "-m", "new sensor"))
    assert _state(w) is AlarmState.UNACK_ACTIVE

    # out of service works before the alarm ever fired, as over the API
    _ok(w.cli("alarms", "out-of-service", "hot", "press-02", "-m", "broken sensor"))
    assert _state(w, "hot", "press-02") is AlarmState.OUT_OF_SERVICE

    page = json.loads(_ok(w.cli("alarms", "history", "--since", "1h", "--json")).stdout)
    causes = [(e["cause"], e["user"]) for e in page["events"] if e["device"] == "press-01"]
    assert causes == [
        ("condition_active", None),
        ("acknowledge", ACTOR),
        ("shelve", ACTOR),
        ("unshelve", ACTOR),
        ("suppress_by_design", None),  # the store keeps the user in the reason
        ("unsuppress", None),
        ("remove_from_service", ACTOR),
        ("return_to_service", ACTOR),
    ]
    assert page["next_offset"] is None
    ack = next(e for e in page["events"] if e["cause"] == "acknowledge")
    assert ack["comment"] == "coolant refilled"
    two = json.loads(_ok(w.cli("alarms", "history", "--limit", "2", "--json")).stdout)
    assert (len(two["events"]), two["next_offset"]) == (2, 2)
    only = json.loads(_ok(w.cli("alarms", "history", "--device", "press-02", "--json")).stdout)[
        "events"
    ]
    assert [e["cause"] for e in only] == ["remove_from_service"]
    assert "acknowledge" in _ok(w.cli("alarms", "history")).stdout

    with w.stores() as s:
        for action in ("alarm.ack", "alarm.shelve", "alarm.unshelve", "alarm.suppress",
                       "alarm.unsuppress", "alarm.return_to_service"):  # fmt: skip
            ok = [r for r in _audit(s, action) if r[2] == "ok"]
            assert ok == [(ACTOR, "alarm:hot/press-01", "ok")], action
        assert _audit(s, "alarm.out_of_service") == [
            (ACTOR, "alarm:hot/press-01", "ok"),
            (ACTOR, "alarm:hot/press-02", "ok"),
        ]
        # the refused second acknowledgement is recorded too, as failed, with why
        failed = [
            r
            for r in s.audit.records(AuditFilter(tenant_id=s.tenant_id), limit=None)
            if r.action == "alarm.ack" and r.outcome == "failed"
        ]
        assert [(r.actor, r.object) for r in failed] == [(ACTOR, "alarm:hot/press-01")]
        assert "cannot acknowledge" in failed[0].details["error"]


def test_alarm_flood_figures(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    _raise_alarm(w)
    _raise_alarm(w, "hot", "press-02")
    flood = json.loads(_ok(w.cli("alarms", "flood", "--since", "1h", "--json")).stdout)
    assert flood["bucket_ns"] == 600 * 10**9
    assert flood["threshold"] == 10
    assert {a["area"]: a["total"] for a in flood["areas"]} == {"press-shop": 1, "unplaced": 1}
    assert {(b["rule"], b["device"]) for b in flood["bad_actors"]} == {
        ("hot", "press-01"), ("hot", "press-02"),
    }  # fmt: skip
    quiet = json.loads(
        _ok(w.cli("alarms", "flood", "--since", "1h", "--bucket", "1h", "--threshold", "0",
                  "--json")).stdout
    )  # fmt: skip
    assert quiet["bucket_ns"] == 3600 * 10**9
    assert sum(a["flood_buckets"] for a in quiet["areas"]) == 2
    assert "press-shop" in _ok(w.cli("alarms", "flood")).stdout
    bad = w.cli("alarms", "flood", "--since", "30d", "--bucket", "1s")
    assert bad.exit_code == 1
    assert "bucket: more than 10000 buckets" in bad.output


def test_refused_inputs_and_unknown_names(w: World) -> None:
    _ok(w.cli("rules", "create", w.file("rules.yaml", HOT_YAML)))
    _raise_alarm(w)
    cases = [
        (("rules", "list"), "ghost-co", "no tenant 'ghost-co' (tenants: acme, other)"),
        (("rules", "show", "nope"), "acme", "rule 'nope' not found"),
        (("rules", "enable", "nope"), "acme", "rule 'nope' not found"),
        (("rules", "delete", "nope", "--yes"), "acme", "rule 'nope' not found"),
        (("alarms", "ack", "nope", "press-01", "-m", "x"), "acme", "rule 'nope' not found"),
        (("alarms", "ack", "hot", "press-99", "-m", "x"), "acme", "device 'press-99' not found"),
        (("alarms", "suppress", "hot", "press-99", "--reason", "x"), "acme",
         "device 'press-99' not found"),
        (("alarms", "ack", "hot", "press-02", "-m", "x"), "acme",
         "no alarm of rule 'hot' on device 'press-02'"),
        (("alarms", "list", "--device", "press-99"), "acme", "device 'press-99' not found"),
        (("alarms", "list", "--state", "loud"), "acme", "--state: unknown state 'loud'"),
        (("alarms", "ack", "hot", "press-01", "-m", "  "), "acme", "--comment: String should match"),
        (("alarms", "shelve", "hot", "press-01", "-m", "x"), "acme",
         "give exactly one of --for or --until"),
        (("alarms", "shelve", "hot", "press-01", "-m", "x", "--for", "soon"), "acme",
         "'soon' is not a duration"),
        (("alarms", "history", "--since", "yesterday"), "acme", "since"),
        (("rules", "create", str(w.tmp / "missing.yaml")), "acme", "cannot read"),
        (("rules", "list"), "other", ""),  # another tenant: fine, and empty
    ]  # fmt: skip
    for args, tenant, message in cases:
        result = w.cli(*args, tenant=tenant)
        if not message:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 1, (args, result.output)
        assert message in _one_line(result), (args, result.output)
    nowhere = w.tmp / "typo"
    result = CliRunner().invoke(app, ["rules", "list", "-t", "acme", "-d", str(nowhere)])
    assert result.exit_code == 1
    assert "no platform data in" in result.output
    assert not (nowhere / "registry.db").exists()  # no empty registry made by the typo
    assert _state(w) is AlarmState.UNACK_ACTIVE  # none of that changed the alarm
    with w.stores() as s:
        assert [o for _, o, out in _audit(s, "alarm.ack") if out == "ok"] == []
        failed = {o for _, o, out in _audit(s, "alarm.ack") if out == "failed"}
        assert failed == {"alarm:hot/press-99", "alarm:hot/press-02"}


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    for group, typer_app in (("rules", rules_app), ("alarms", alarms_app)):
        top = runner.invoke(app, [group, "--help"])
        assert top.exit_code == 0
        assert "Example:" in top.output
        names = [c.name for c in typer_app.registered_commands]
        assert len(names) >= 8, names
        for name in names:
            assert name is not None
            result = runner.invoke(app, [group, name, "--help"])
            assert result.exit_code == 0, (group, name)
            assert "Example: shopfloor " + group in " ".join(result.output.split()), (group, name)
