"""``shopfloor rules`` and ``shopfloor alarms``: rules and the ISA-18.2 alarms they raise.

Works on the registry directly (like ``shopfloor user`` and ``shopfloor device``), so it runs
while the platform serves: a running server picks up a changed rule when its rules runtime
next rebuilds the tenant's engine (within about a second, docs/rules.md). The checks are the
API's (api/rules_routes.py): a rule file is parsed with the API's own ``RuleIn`` model, so a
bad file names the same fields an HTTP 422 would, then checked by the rule store against the
tenant's devices, with the position of an expression error. Every change is audited with the
actor ``cli:<os user>``, failed attempts included (as the API's audit middleware records
them). Heavy modules (the registry, pydantic models, the API) are imported inside the commands
to keep ``shopfloor --help`` fast. Errors exit with status 1.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from shopfloor.api.rules_routes import RuleIn
    from shopfloor.registry.service import Registry
    from shopfloor.rules.store import AlarmInfo, AlarmStore, RuleInfo, RuleStore
    from shopfloor.security.audit import AuditLog

rules_app = typer.Typer(
    help=(
        "Rules on the live stream (threshold, rate, expression, window, stale, state): create"
        " from YAML or JSON, validate, list, enable, disable, delete, export.\n\nExample:"
        " shopfloor rules create rules.yaml --tenant acme -d shopfloor-data"
    ),
    no_args_is_help=True,
)
alarms_app = typer.Typer(
    help=(
        "Alarms (ISA-18.2): list, history, acknowledge, shelve, suppress, out of service,"
        " flood figures.\n\nExample: shopfloor alarms ack hot press-01 --comment 'coolant"
        " refilled' --tenant acme -d shopfloor-data"
    ),
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)  # an error stays one line in logs

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant name.")]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="Folder holding all platform data.", envvar="SHOPFLOOR_DATA_DIR"
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Platform settings YAML (registry_url, audit_key_file, ...).",
        exists=True,
        dir_okay=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON (the API's shape) for scripts.")]
RuleName = Annotated[str, typer.Argument(help="The rule's name.")]
RuleArg = Annotated[str, typer.Argument(help="The alarm's rule.")]
DeviceArg = Annotated[str, typer.Argument(help="The alarm's device.")]
RuleFile = Annotated[
    str,
    typer.Argument(help="YAML or JSON file with one rule or a list of rules; - reads stdin."),
]


def _stdout() -> Console:
    """Where tables go: the terminal's width, or wide when piped (80 columns would wrap
    device names and times mid-word in a file or a script's capture)."""
    out = Console()
    return out if out.is_terminal else Console(width=250)


def _fail(exc: Exception | str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(exc))}")  # messages may hold [brackets]
    raise typer.Exit(1)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of a pydantic error, the field dotted as the API's 422 names it."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first.get("loc", ())), str(first.get("msg", "invalid"))


def _checked(model: type[BaseModel], options: dict[str, str] | None = None, **values: Any) -> Any:
    """``values`` through one of the API's request models (the same limits as the API);
    an error names the command-line option (``options`` maps a model field to its option)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        field, msg = _first_error(exc)
        option = (options or {}).get(field, f"--{field.replace('_', '-')}")
        _fail(f"{option}: {msg}")


# -- opening the data folder -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    registry: Registry
    rules: RuleStore
    alarms: AlarmStore
    audit: AuditLog
    tenant_id: int
    tenant: str

    def record(
        self, action: str, obj: str, outcome: str, details: dict[str, Any] | None = None
    ) -> None:
        self.audit.record(
            action,
            obj,
            outcome,
            actor=_actor(),
            role="local",
            tenant_id=self.tenant_id,
            source="local",
            details=details,
        )

    @contextmanager
    def change(
        self,
        action: str,
        obj: str,
        details: dict[str, Any] | None = None,
        *,
        record_ok: bool = True,
    ) -> Iterator[None]:
        """Audit one change: ``ok`` when the block ends (unless ``record_ok`` is False: a
        check before the change), ``failed`` with why when it raises a Shopfloor error,
        which then goes on to the caller."""
        from shopfloor.core.errors import ShopfloorError

        try:
            yield
        except ShopfloorError as exc:
            self.record(action, obj, "failed", {**(details or {}), "error": str(exc)})
            raise
        if record_ok:
            self.record(action, obj, "ok", details)


@contextmanager
def _open(tenant: str, data_dir: Path | None, config: Path | None) -> Iterator[_Ctx]:
    """The stores on the data folder's registry for one tenant; a Shopfloor error inside
    ends the command with its message and exit status 1."""
    from shopfloor.core.config import load_settings
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.registry.service import Registry
    from shopfloor.rules.store import AlarmStore, RuleStore
    from shopfloor.security.audit import AuditLog

    try:
        settings = load_settings(config, data_dir=data_dir)
    except ShopfloorError as exc:
        _fail(exc)
    if settings.registry_url is None and not (settings.data_dir / "registry.db").exists():
        # A mistyped --data-dir must not silently start an empty registry somewhere.
        _fail(f"no platform data in {settings.data_dir} (no registry.db): check --data-dir")
    try:
        registry = Registry(settings.resolved_registry_url())
    except ShopfloorError as exc:
        _fail(exc)
    try:
        registry.upgrade()
        try:
            tenant_id = registry.get_tenant(tenant).id
        except ShopfloorError:
            names = ", ".join(t.name for t in registry.list_tenants()) or "none yet"
            _fail(f"no tenant {tenant!r} (tenants: {names})")
        ctx = _Ctx(
            registry,
            RuleStore(registry),
            AlarmStore(registry),
            AuditLog(registry, settings),
            tenant_id,
            tenant,
        )
        try:
            yield ctx
        except ShopfloorError as exc:
            _fail(exc)
    finally:
        registry.close()


# -- rule files --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileRule:
    where: str  # "rules.yaml, rule 2 'hot'": names the entry in every message
    body: RuleIn


def _read(source: str) -> tuple[str, str]:
    """(label, text) of a file, or of stdin for ``-``."""
    if source == "-":
        return "<stdin>", sys.stdin.read()
    try:
        return source, Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {source}: {exc}")


_BOOL_TAG = "tag:yaml.org,2002:bool"


def _yaml_loader() -> type[Any]:
    """PyYAML's safe loader with YAML 1.2 booleans: only true / false. YAML 1.1 also reads
    on / off / yes / no as booleans, which would turn an action's ``on:`` key into True."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Loader


def _parse_text(label: str, text: str) -> object:
    import yaml

    # JSON by its name or, on stdin, by its first character; YAML otherwise. JSON's own
    # parser gives the better error position for JSON.
    as_json = label.lower().endswith(".json") or (
        label == "<stdin>" and text.lstrip()[:1] in ("{", "[")
    )
    if as_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            _fail(f"{label}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    try:
        return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        _fail(f"{label}: not valid YAML{at}: {exc.problem or exc}")
    except yaml.YAMLError as exc:
        _fail(f"{label}: not valid YAML: {exc}")


def _where(label: str, index: int, count: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    named = f" {name!r}" if isinstance(name, str) else ""
    return f"{label}, rule {index + 1}{named}" if count > 1 else f"{label}, rule{named}"


def _load_rules(source: str) -> list[_FileRule]:
    """The rules of a file, each parsed with the API's RuleIn model (same fields, same errors);
    the first error ends the command naming the file, the rule and the field."""
    from pydantic import ValidationError

    from shopfloor.api.rules_routes import RuleIn

    label, text = _read(source)
    doc = _parse_text(label, text)
    entries = doc if isinstance(doc, list) else [doc]
    if doc is None or not entries or not all(isinstance(e, dict) for e in entries):
        _fail(f"{label}: holds neither a rule (a mapping) nor a list of rules")
    out: list[_FileRule] = []
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        where = _where(label, i, len(entries), raw)
        try:
            body = RuleIn.model_validate(raw)
        except ValidationError as exc:
            field, msg = _first_error(exc)
            _fail(f"{where}: {field}: {msg}" if field else f"{where}: {msg}")
        if body.name in seen:
            _fail(f"{where}: name: rule {body.name!r} appears twice in the file")
        seen.add(body.name)
        out.append(_FileRule(where, body))
    return out


def _check_rule(ctx: _Ctx, entry: _FileRule, old: RuleInfo | None) -> None:
    """Everything RuleStore.create / replace check, without storing: the name, the definition
    (built as the engine's rule), the actions (masked secrets taken from ``old``, as replace
    does), a command action's target device, then the engine's check against the tenant's
    devices (signals, types, the expression's position). Raises the store's errors."""
    from shopfloor.core.errors import NotFound
    from shopfloor.registry.service import check_name
    from shopfloor.rules.rule_actions import keep_secrets, parse_actions
    from shopfloor.rules.store import build_rule

    body = entry.body
    check_name(body.name, "rule")
    kind, definition = body.fields()
    rule = build_rule(body.name, kind, definition, body.device_type, body.device)
    actions: object = body.action_list()
    if old is not None:
        actions = keep_secrets(actions, old.actions)
    parse_actions(actions)
    for i, action in enumerate(body.actions):
        device = action.config.get("device")
        if action.kind == "command" and isinstance(device, str):
            try:  # the API answers 404 for an unknown command target too
                ctx.registry.get_device(ctx.tenant_id, device)
            except NotFound as exc:
                raise NotFound(f"actions[{i}].config.device: {exc}") from None
    ctx.rules.check(ctx.tenant_id, rule)


def _check_entry(ctx: _Ctx, entry: _FileRule, old: RuleInfo | None) -> None:
    """:func:`_check_rule`; an error comes back naming the file entry before the field."""
    from shopfloor.core.errors import ShopfloorError

    try:
        _check_rule(ctx, entry, old)
    except ShopfloorError as exc:  # str(BadInput) is "field: message"
        raise ShopfloorError(f"{entry.where}: {exc}") from None


def _existing(ctx: _Ctx) -> dict[str, RuleInfo]:
    return {r.name: r for r in ctx.rules.list_rules(ctx.tenant_id)}


def _target(r: RuleIn | RuleInfo) -> str:
    return f"device {r.device}" if r.device is not None else f"device type {r.device_type}"


def _rule_json(r: RuleInfo) -> dict[str, Any]:
    """A rule as GET /api/v1/rules/{name} answers (secrets masked)."""
    from shopfloor.api.rules_routes import rule_out

    return rule_out(r).model_dump(mode="json")


def _export_entry(r: RuleInfo) -> dict[str, Any]:
    """A rule as a file entry that ``rules create`` reads back (RuleIn's fields)."""
    from shopfloor.rules.rule_actions import masked

    entry: dict[str, Any] = {"name": r.name}
    if r.device is not None:
        entry["device"] = r.device
    else:
        entry["device_type"] = r.device_type
    entry.update(
        priority=int(r.priority),
        message=r.message,
        enabled=r.enabled,
        definition={"kind": r.kind, **r.definition},
        actions=[masked(a) for a in r.actions],
    )
    return entry


# -- rules commands ----------------------------------------------------------------------------


@rules_app.command("list")
def rules_list(
    tenant: Tenant, data_dir: DataDir = None, config: ConfigFile = None, as_json: JsonOut = False
) -> None:
    """List the tenant's rules.

    Example: shopfloor rules list --tenant acme -d shopfloor-data --json
    """
    with _open(tenant, data_dir, config) as ctx:
        rules = ctx.rules.list_rules(ctx.tenant_id)
    if as_json:
        print(json.dumps({"rules": [_rule_json(r) for r in rules]}, indent=2))
        return
    if not rules:
        console.print(f"Tenant {escape(tenant)} has no rules yet.")
        return
    table = Table("name", "kind", "target", "priority", "enabled", "actions")
    for r in rules:
        state = "yes" if r.enabled else f"no: {r.disabled_reason or '-'}"
        acts = ", ".join(a.kind for a in r.actions) or "-"
        table.add_row(
            *(escape(v) for v in (r.name, r.kind, _target(r), str(int(r.priority)), state, acts))
        )
    _stdout().print(table)


@rules_app.command("show")
def rules_show(
    name: RuleName,
    tenant: Tenant,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Show one rule with its definition and actions (secrets as '********').

    Example: shopfloor rules show hot --tenant acme -d shopfloor-data
    """
    import yaml

    with _open(tenant, data_dir, config) as ctx:
        info = ctx.rules.get(ctx.tenant_id, name)
    data = _rule_json(info)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


@rules_app.command("create")
def rules_create(
    file: RuleFile,
    tenant: Tenant,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace rules of the same name (their enabled state stays, as with PUT;"
            " masked secrets keep the stored ones) instead of failing.",
        ),
    ] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create rules from a YAML or JSON file (the POST /api/v1/rules body, or a list of them).

    Every rule is checked first; if one fails, none is stored.

    Example: shopfloor rules create rules.yaml --replace --tenant acme -d shopfloor-data
    """
    from shopfloor.core.errors import Conflict

    entries = _load_rules(file)
    with _open(tenant, data_dir, config) as ctx:
        existing = _existing(ctx)
        for entry in entries:
            old = existing.get(entry.body.name)
            action = "rule.replace" if old is not None and replace else "rule.create"
            # Every rule is checked before any is stored; only a refusal is recorded here.
            with ctx.change(action, f"rule:{entry.body.name}", {"file": file}, record_ok=False):
                if old is not None and not replace:
                    raise Conflict(
                        f"{entry.where}: rule {entry.body.name!r} exists already"
                        " (use --replace to replace it)"
                    )
                _check_entry(ctx, entry, old)
        for entry in entries:
            body = entry.body
            kind, definition = body.fields()
            common: dict[str, Any] = {
                "device_type": body.device_type,
                "device": body.device,
                "priority": body.priority,
                "message": body.message,
                "actions": body.action_list(),
            }
            details = {"kind": kind, "target": _target(body), "priority": body.priority}
            if body.name in existing:
                with ctx.change("rule.replace", f"rule:{body.name}", details):
                    ctx.rules.replace(ctx.tenant_id, body.name, kind, definition, **common)
                console.print(f"Rule [bold]{escape(body.name)}[/bold] replaced.")
            else:
                with ctx.change("rule.create", f"rule:{body.name}", details):
                    ctx.rules.create(
                        ctx.tenant_id, body.name, kind, definition, enabled=body.enabled, **common
                    )
                console.print(
                    f"Rule [bold]{escape(body.name)}[/bold] created ({kind} on "
                    f"{escape(_target(body))})."
                )


@rules_app.command("validate")
def rules_validate(
    file: RuleFile, tenant: Tenant, data_dir: DataDir = None, config: ConfigFile = None
) -> None:
    """Check a rule file against the tenant's devices without storing anything.

    Exit status 0 when every rule would be accepted; 1 with the file, rule, field and
    position of the first error.

    Example: shopfloor rules validate rules.yaml --tenant acme -d shopfloor-data
    """
    entries = _load_rules(file)
    with _open(tenant, data_dir, config) as ctx:
        existing = _existing(ctx)
        for entry in entries:
            old = existing.get(entry.body.name)
            _check_entry(ctx, entry, old)
    label = "<stdin>" if file == "-" else file
    console.print(f"[green]ok:[/green] {escape(label)}: {len(entries)} rule(s) valid.")
    for entry in entries:
        if entry.body.name in existing:
            console.print(f"  {escape(entry.body.name)} exists already: create needs --replace.")


@rules_app.command("enable")
def rules_enable(
    name: RuleName, tenant: Tenant, data_dir: DataDir = None, config: ConfigFile = None
) -> None:
    """Enable a rule (also one the runtime disabled after a failure).

    Example: shopfloor rules enable hot --tenant acme -d shopfloor-data
    """
    with _open(tenant, data_dir, config) as ctx, ctx.change("rule.enable", f"rule:{name}"):
        ctx.rules.set_enabled(ctx.tenant_id, name, True)
    console.print(f"Rule [bold]{escape(name)}[/bold] enabled.")


@rules_app.command("disable")
def rules_disable(
    name: RuleName,
    tenant: Tenant,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; shown with the rule.")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Disable a rule, with an optional reason.

    Example: shopfloor rules disable hot --reason 'sensor replaced' --tenant acme -d data
    """
    from shopfloor.api.rules_routes import DisableIn

    _checked(DisableIn, reason=reason)
    details = {"reason": reason} if reason else None
    with (
        _open(tenant, data_dir, config) as ctx,
        ctx.change("rule.disable", f"rule:{name}", details),
    ):
        ctx.rules.set_enabled(ctx.tenant_id, name, False, reason)
    console.print(f"Rule [bold]{escape(name)}[/bold] disabled.")


@rules_app.command("delete")
def rules_delete(
    name: RuleName,
    tenant: Tenant,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Delete a rule and its alarms (their history stays); asks first unless --yes.

    Example: shopfloor rules delete hot --yes --tenant acme -d shopfloor-data
    """
    with _open(tenant, data_dir, config) as ctx:
        ctx.rules.get(ctx.tenant_id, name)  # an unknown rule fails before the question
        try:
            sure = yes or typer.confirm(f"Delete rule {name!r} and its alarms?", default=False)
        except typer.Abort:  # no answer (stdin closed, not a terminal)
            sure = False
        if not sure:
            _fail(f"rule {name!r} not deleted: confirm, or pass --yes")
        with ctx.change("rule.delete", f"rule:{name}"):
            ctx.rules.delete(ctx.tenant_id, name)
    console.print(f"Rule [bold]{escape(name)}[/bold] deleted.")


@rules_app.command("export")
def rules_export(
    tenant: Tenant,
    file: Annotated[
        Path | None, typer.Argument(help="Write here (overwritten); default: stdout.")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """All rules of the tenant as YAML, secrets masked as '********'.

    The file reads back with 'rules create FILE --replace': masked secrets then keep the
    stored ones (into another tenant they must be filled in first).

    Example: shopfloor rules export rules.yaml --tenant acme -d shopfloor-data
    """
    import yaml

    from shopfloor.rules.rule_actions import MASK

    with _open(tenant, data_dir, config) as ctx:
        rules = ctx.rules.list_rules(ctx.tenant_id)
    head = (
        f"# Rules of tenant {tenant}; secrets masked as '{MASK}'.\n"
        f"# Re-import: shopfloor rules create FILE --replace --tenant {tenant}\n"
    )
    text = head + yaml.safe_dump(
        [_export_entry(r) for r in rules], sort_keys=False, allow_unicode=True
    )
    if file is None:
        print(text, end="")
        return
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {file}: {exc}")
    console.print(f"Wrote {len(rules)} rule(s) to {escape(str(file))}.")


# -- alarms ------------------------------------------------------------------------------------


def _alarm_json(info: AlarmInfo) -> dict[str, Any]:
    from shopfloor.api.rules_routes import alarm_out

    return alarm_out(info).model_dump(mode="json")


def _since(text: str, field: str, now: int) -> int:
    """A duration back from now (1h, 30m, 7d) or an instant (RFC 3339, epoch ms, now, -1h)."""
    from shopfloor.core.errors import BadInput
    from shopfloor.core.timeutil import parse_duration, parse_instant

    try:
        return now - parse_duration(text, field)
    except BadInput:
        return parse_instant(text, field, now)


def _report(info: AlarmInfo, what: str) -> None:
    a = info.alarm
    console.print(
        f"Alarm [bold]{escape(info.rule)}/{escape(info.device)}[/bold] {what}: now {a.state.value}."
    )


def _act(
    tenant: str,
    data_dir: Path | None,
    config: Path | None,
    action: str,
    rule: str,
    device: str,
    details: dict[str, Any] | None,
    call: Any,
) -> AlarmInfo:
    """Run one operator action on the alarm, audited; ``call(ctx)`` returns the new alarm."""
    with _open(tenant, data_dir, config) as ctx:
        ctx.rules.get(ctx.tenant_id, rule)  # an unknown rule first, as the API checks it
        with ctx.change(action, f"alarm:{rule}/{device}", details):
            info: AlarmInfo = call(ctx)
    return info


@alarms_app.command("list")
def alarms_list(
    tenant: Tenant,
    state: Annotated[
        str | None,
        typer.Option(
            help="Only this state: normal, unack_active, ack_active, unack_rtn, "
            "shelved, suppressed_by_design, out_of_service."
        ),
    ] = None,
    priority: Annotated[
        int | None, typer.Option(min=1, max=4, help="Only this priority (1 urgent .. 4 low).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Only this device's alarms.")] = None,
    area: Annotated[str | None, typer.Option(help="Only this plant area's alarms.")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Current alarm states, most urgent and newest first (expired shelves end first).

    Example: shopfloor alarms list --state unack_active --tenant acme -d shopfloor-data
    """
    from shopfloor.core.timeutil import to_iso
    from shopfloor.rules.alarms import AlarmState, Priority

    wanted: AlarmState | None = None
    if state is not None:
        try:
            wanted = AlarmState(state)
        except ValueError:
            _fail(
                f"--state: unknown state {state!r}, use one of "
                f"{', '.join(s.value for s in AlarmState)}"
            )
    with _open(tenant, data_dir, config) as ctx:
        if device is not None:
            ctx.registry.get_device(ctx.tenant_id, device)  # unknown: an error, not "none"
        ctx.alarms.expire_shelves(ctx.tenant_id)
        found = ctx.alarms.list_alarms(
            ctx.tenant_id,
            state=wanted,
            priority=None if priority is None else Priority(priority),
            area=area,
            device=device,
        )
    if as_json:
        print(json.dumps({"alarms": [_alarm_json(a) for a in found]}, indent=2))
        return
    if not found:
        console.print("No alarms.")
        return
    table = Table("rule", "device", "state", "active", "value", "prio", "area", "since", "message")
    for info in found:
        a = info.alarm
        since = "-" if a.last_change_ts is None else to_iso(a.last_change_ts)
        cells = (
            info.rule,
            info.device,
            a.state.value,
            "yes" if a.active else "no",
            "-" if a.value is None else f"{a.value:g}",
            str(int(a.priority)),
            a.area,
            since,
            a.message,
        )
        table.add_row(*(escape(c) for c in cells))
    _stdout().print(table)


@alarms_app.command("history")
def alarms_history(
    tenant: Tenant,
    since: Annotated[
        str, typer.Option(help="From: a duration back (1h, 7d) or a time (RFC 3339).")
    ] = "24h",
    until: Annotated[str, typer.Option(help="Until (excluded): a time, or now.")] = "now",
    rule: Annotated[str | None, typer.Option(help="Only this rule's alarms.")] = None,
    device: Annotated[str | None, typer.Option(help="Only this device's alarms.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many events.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many events first.")] = 0,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Alarm history: every state change, oldest first.

    Example: shopfloor alarms history --since 8h --rule hot --tenant acme -d shopfloor-data
    """
    from shopfloor.api.rules_routes import history_out
    from shopfloor.core.timeutil import now_ns, parse_instant, to_iso

    with _open(tenant, data_dir, config) as ctx:
        now = now_ns()
        lo, hi = _since(since, "since", now), parse_instant(until, "until", now)
        entries = ctx.alarms.history(
            ctx.tenant_id,
            start=lo,
            end=hi,
            rule=rule,
            device=device,
            limit=limit + 1,
            offset=offset,
        )
    more = len(entries) > limit
    entries = entries[:limit]
    if as_json:
        events = [history_out(h).model_dump(mode="json") for h in entries]
        page = {"events": events, "next_offset": offset + limit if more else None}
        print(json.dumps(page, indent=2))
        return
    if not entries:
        console.print("No alarm events in that time.")
        return
    table = Table("time", "alarm", "from", "to", "cause", "user", "comment")
    for h in entries:
        e = h.event
        cells = (
            to_iso(e.ts),
            f"{h.rule}/{h.device}",
            e.from_state.value,
            e.to_state.value,
            e.cause.value,
            e.user or "-",
            e.comment or "-",
        )
        table.add_row(*(escape(c) for c in cells))
    _stdout().print(table)
    if more:
        console.print(f"More events: --offset {offset + limit}")


Comment = Annotated[str, typer.Option("--comment", "-m", help="Why (required, kept in history).")]
OptComment = Annotated[
    str | None, typer.Option("--comment", "-m", help="Why (optional, kept in history).")
]


@alarms_app.command("ack")
def alarms_ack(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    comment: Comment,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Acknowledge an unacknowledged alarm.

    Example: shopfloor alarms ack hot press-01 -m 'coolant refilled' --tenant acme -d data
    """
    from shopfloor.api.rules_routes import AckIn

    body = _checked(AckIn, comment=comment)
    user = _actor()
    info = _act(
        tenant,
        data_dir,
        config,
        "alarm.ack",
        rule,
        device,
        {"comment": body.comment},
        lambda c: c.alarms.acknowledge(c.tenant_id, rule, device, user, body.comment),
    )
    _report(info, "acknowledged")


@alarms_app.command("shelve")
def alarms_shelve(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    comment: Comment,
    duration: Annotated[
        str | None, typer.Option("--for", help="How long, e.g. 30m, 2h; or --until.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Until this time (RFC 3339); or --for.")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Shelve an alarm for a while: tracked, not annunciated; it returns by itself.

    Example: shopfloor alarms shelve hot press-01 --for 2h -m 'fix on the way' --tenant acme
    """
    from shopfloor.api.rules_routes import ShelveIn
    from shopfloor.core.timeutil import now_ns, parse_duration, parse_instant

    body = _checked(
        ShelveIn, {"duration": "--for"}, comment=comment, duration=duration, until=until
    )
    if (until is None) == (duration is None):
        _fail("give exactly one of --for or --until")
    user = _actor()

    def call(c: _Ctx) -> AlarmInfo:
        now = now_ns()
        end = (
            parse_instant(until, "until", now)
            if until is not None
            else now + parse_duration(str(duration), "for")
        )
        return c.alarms.shelve(c.tenant_id, rule, device, user, end, body.comment)

    details = {"comment": body.comment, "for": duration, "until": until}
    info = _act(tenant, data_dir, config, "alarm.shelve", rule, device, details, call)
    _report(info, "shelved")


@alarms_app.command("unshelve")
def alarms_unshelve(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    comment: OptComment = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Return a shelved alarm to annunciation before its time.

    Example: shopfloor alarms unshelve hot press-01 --tenant acme -d shopfloor-data
    """
    from shopfloor.api.rules_routes import UnshelveIn

    _checked(UnshelveIn, comment=comment)
    user = _actor()
    info = _act(
        tenant,
        data_dir,
        config,
        "alarm.unshelve",
        rule,
        device,
        {"comment": comment},
        lambda c: c.alarms.unshelve(c.tenant_id, rule, device, user, comment),
    )
    _report(info, "unshelved")


@alarms_app.command("suppress")
def alarms_suppress(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    reason: Annotated[str, typer.Option("--reason", help="Why (required), e.g. changeover.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Suppress an alarm by design (a plant state that makes it meaningless); works before it
    ever fired.

    Example: shopfloor alarms suppress hot press-01 --reason changeover --tenant acme -d data
    """
    from shopfloor.api.rules_routes import ReasonIn

    body = _checked(ReasonIn, reason=reason)
    user = _actor()
    info = _act(
        tenant,
        data_dir,
        config,
        "alarm.suppress",
        rule,
        device,
        {"reason": body.reason},
        lambda c: c.alarms.suppress(c.tenant_id, rule, device, user, body.reason),
    )
    _report(info, "suppressed")


@alarms_app.command("unsuppress")
def alarms_unsuppress(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (optional).")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """End a suppression by design.

    Example: shopfloor alarms unsuppress hot press-01 --tenant acme -d shopfloor-data
    """
    from shopfloor.api.rules_routes import OptionalReasonIn

    _checked(OptionalReasonIn, reason=reason)
    user = _actor()
    info = _act(
        tenant,
        data_dir,
        config,
        "alarm.unsuppress",
        rule,
        device,
        {"reason": reason},
        lambda c: c.alarms.unsuppress(c.tenant_id, rule, device, user, reason),
    )
    _report(info, "unsuppressed")


@alarms_app.command("out-of-service")
def alarms_out_of_service(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    comment: Comment,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Take an alarm out of service (maintenance, a broken sensor); works before it ever fired.

    Example: shopfloor alarms out-of-service hot press-01 -m 'sensor swap' --tenant acme
    """
    from shopfloor.api.rules_routes import AckIn

    body = _checked(AckIn, comment=comment)
    user = _actor()
    info = _act(
        tenant,
        data_dir,
        config,
        "alarm.out_of_service",
        rule,
        device,
        {"comment": body.comment},
        lambda c: c.alarms.remove_from_service(c.tenant_id, rule, device, user, body.comment),
    )
    _report(info, "taken out of service")


@alarms_app.command("return-to-service")
def alarms_return_to_service(
    rule: RuleArg,
    device: DeviceArg,
    tenant: Tenant,
    comment: OptComment = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Return an out-of-service alarm to service.

    Example: shopfloor alarms return-to-service hot press-01 --tenant acme -d shopfloor-data
    """
    from shopfloor.api.rules_routes import UnshelveIn

    _checked(UnshelveIn, comment=comment)
    user = _actor()
    info = _act(
        tenant,
        data_dir,
        config,
        "alarm.return_to_service",
        rule,
        device,
        {"comment": comment},
        lambda c: c.alarms.return_to_service(c.tenant_id, rule, device, user, comment),
    )
    _report(info, "returned to service")


@alarms_app.command("flood")
def alarms_flood(
    tenant: Tenant,
    since: Annotated[
        str, typer.Option(help="From: a duration back (24h, 7d) or a time (RFC 3339).")
    ] = "24h",
    until: Annotated[str, typer.Option(help="Until (excluded): a time, or now.")] = "now",
    bucket: Annotated[str, typer.Option(help="Bucket length, e.g. 10m, 1h.")] = "10m",
    threshold: Annotated[
        int | None,
        typer.Option(min=0, max=1_000_000, help="A flood: more alarms per bucket (default 10)."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, max=100, help="Bad actors listed.")] = 10,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    as_json: JsonOut = False,
) -> None:
    """Alarm load (ISA-18.2 / EEMUA 191): annunciations per bucket and area, floods, bad
    actors; as GET /api/v1/alarms/flood.

    Example: shopfloor alarms flood --since 7d --bucket 10m --tenant acme -d shopfloor-data
    """
    from shopfloor.api.rules_routes import (
        MAX_BUCKETS,
        AreaFloodOut,
        BadActorOut,
        FloodOut,
    )
    from shopfloor.core.errors import BadInput
    from shopfloor.core.timeutil import now_ns, parse_duration, parse_instant, to_iso
    from shopfloor.rules.alarm_flood import FLOOD_THRESHOLD, bad_actors, flood_figures

    limit = FLOOD_THRESHOLD if threshold is None else threshold
    with _open(tenant, data_dir, config) as ctx:
        now = now_ns()
        lo, hi = _since(since, "since", now), parse_instant(until, "until", now)
        bucket_ns = parse_duration(bucket, "bucket")
        if hi <= lo:
            raise BadInput(f"until {until!r} is not after since {since!r}", "until")
        if -(-(hi - (lo // bucket_ns) * bucket_ns) // bucket_ns) > MAX_BUCKETS:
            raise BadInput(f"more than {MAX_BUCKETS} buckets: widen the bucket", "bucket")
        entries = ctx.alarms.events(ctx.tenant_id, lo, hi)
    events = [h.event for h in entries]
    names = {h.event.alarm_id: (h.rule, h.device) for h in entries}
    figures = flood_figures(events, start=lo, end=hi, bucket_ns=bucket_ns, threshold=limit)
    actors = bad_actors(events, top, start=lo, end=hi)
    out = FloodOut(
        start_ns=lo,
        end_ns=hi,
        bucket_ns=bucket_ns,
        threshold=limit,
        areas=[
            AreaFloodOut(
                area=f.area,
                first_bucket_ns=f.first_bucket_ns,
                bucket_ns=f.bucket_ns,
                counts=list(f.counts),
                total=f.total,
                peak=f.peak,
                peak_bucket_ns=f.peak_bucket_ns,
                mean=f.mean,
                flood_buckets=f.flood_buckets,
                flood_share=f.flood_share,
            )
            for f in figures.values()
        ],
        bad_actors=[
            BadActorOut(
                rule=names[b.alarm_id][0],
                device=names[b.alarm_id][1],
                area=b.area,
                count=b.count,
                share=b.share,
            )
            for b in actors
        ],
    )
    if as_json:
        print(out.model_dump_json(indent=2))
        return
    console.print(
        f"{to_iso(lo)} .. {to_iso(hi)}, buckets of {bucket}, a flood is more than {limit}."
    )
    if not out.areas:
        console.print("No alarms annunciated in that time.")
        return
    areas = Table("area", "alarms", "peak", "peak bucket", "mean/bucket", "flood buckets", "share")
    for a in out.areas:
        peak_at = "-" if a.peak_bucket_ns is None else to_iso(a.peak_bucket_ns)
        cells = (
            a.area,
            str(a.total),
            str(a.peak),
            peak_at,
            f"{a.mean:.2f}",
            str(a.flood_buckets),
            f"{a.flood_share:.1%}",
        )
        areas.add_row(*(escape(c) for c in cells))
    out_console = _stdout()
    out_console.print(areas)
    if out.bad_actors:
        table = Table("bad actor", "area", "alarms", "share")
        for b in out.bad_actors:
            row = (f"{b.rule}/{b.device}", b.area, str(b.count), f"{b.share:.1%}")
            table.add_row(*(escape(c) for c in row))
        out_console.print(table)
