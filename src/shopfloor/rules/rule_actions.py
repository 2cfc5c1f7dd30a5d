"""The actions attached to a rule: which action runs, with what config, on which alarm events.

A rule carries a list of ``{"kind": ..., "config": {...}, "on": ["activated", ...]}``. Each
entry is checked when the rule is saved (the kind is installed, the config passes the action's
own model), stored as JSON with the rule, and run by the rules runtime for the rule's alarm
events (rules/runtime.py):

- ``activated``: the alarm was annunciated (it entered unacknowledged active). An alarm that
  is shelved, suppressed by design or out of service is not annunciated, so it notifies no one:
  that is the point of those states in ISA-18.2.
- ``cleared``: the condition returned to normal while the alarm was annunciation-enabled.

Secret fields of a config (pydantic ``SecretStr``, e.g. a webhook's ``secret`` or an SMTP
``password``) are never shown back: :func:`masked` replaces them with :data:`MASK`, and a
saved config that sends :data:`MASK` again keeps the stored secret (:func:`keep_secrets`), so a
client can read a rule, change its threshold and write it back. A secret is kept only for an
action of the same kind whose destination (:data:`DESTINATION_KEYS`: a webhook's URL, an SMTP
relay's host, port, user and TLS) is unchanged: otherwise a user allowed to edit rules could
point the action at their own server and have the stored secret sent there. A MASK with no
such stored action is refused (give the secret again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

from pydantic import SecretStr

from shopfloor.core.errors import BadInput
from shopfloor.rules.actions import action_class, parse_config
from shopfloor.rules.alarms import ANNUNCIATING, AlarmEvent, Cause

__all__ = [
    "MASK",
    "MAX_ACTIONS",
    "TRIGGERS",
    "RuleAction",
    "keep_secrets",
    "masked",
    "parse_actions",
    "triggers_of",
]

MASK: Final = "********"
# The config keys that say where an action's secret goes, per kind (see keep_secrets).
DESTINATION_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "webhook": ("url",),
    "email": ("host", "port", "username", "starttls"),
}
MAX_ACTIONS: Final = 10
TRIGGERS: Final = ("activated", "cleared")


@dataclass(frozen=True, slots=True)
class RuleAction:
    kind: str
    config: dict[str, Any]  # as given (validated), secrets in clear: never shown as is
    on: tuple[str, ...] = ("activated",)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config, "on": list(self.on)}


def _secret_fields(kind: str) -> set[str]:
    model = action_class(kind).config_model
    out = set()
    for name, f in model.model_fields.items():
        ann = f.annotation
        if ann is SecretStr or SecretStr in get_args(ann):
            out.add(name)
    return out


def parse_actions(raw: object, field: str = "actions") -> tuple[RuleAction, ...]:
    """Validate a list of action entries (BadInput naming ``actions[i].<field>``)."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise BadInput("actions must be a list", field)
    if len(raw) > MAX_ACTIONS:
        raise BadInput(f"a rule has at most {MAX_ACTIONS} actions", field)
    out = []
    for i, entry in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(entry, Mapping):
            raise BadInput("an action is an object with kind, config and on", where)
        unknown = set(entry) - {"kind", "config", "on"}
        if unknown:
            raise BadInput(f"unknown key(s) {', '.join(sorted(unknown))}", where)
        kind = entry.get("kind")
        if not isinstance(kind, str):
            raise BadInput("kind must be a string", f"{where}.kind")
        try:
            cls = action_class(kind)
        except BadInput as exc:
            raise BadInput(exc.message, f"{where}.kind") from None
        config = entry.get("config", {})
        if isinstance(config, Mapping):
            for key in sorted(_secret_fields(kind) & set(config)):
                if config[key] == MASK:
                    raise BadInput(
                        "a masked secret is kept only for an unchanged destination of the same "
                        "action; give the secret itself",
                        f"{where}.config.{key}",
                    )
        try:
            parse_config(cls.config_model, config)
        except BadInput as exc:
            sub = f".{exc.field}" if exc.field else ""
            raise BadInput(exc.message, f"{where}.config{sub}") from None
        on = entry.get("on", ["activated"])
        if (
            not isinstance(on, Sequence)
            or isinstance(on, str)
            or not on
            or any(t not in TRIGGERS for t in on)
        ):
            raise BadInput(f"on must be a non-empty list of {', '.join(TRIGGERS)}", f"{where}.on")
        assert isinstance(config, Mapping)
        out.append(RuleAction(kind, dict(config), tuple(dict.fromkeys(on))))
    return tuple(out)


def masked(action: RuleAction) -> dict[str, Any]:
    """The entry as shown over the API and the CLI: secret fields replaced by MASK."""
    secret = _secret_fields(action.kind)
    config = {k: (MASK if k in secret and v is not None else v) for k, v in action.config.items()}
    return {"kind": action.kind, "config": config, "on": list(action.on)}


def _destination(kind: str, config: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(config.get(k) for k in DESTINATION_KEYS.get(kind, ()))


def keep_secrets(new: object, old: Sequence[RuleAction]) -> object:
    """``new`` (the raw list being saved) with each MASK replaced by the stored secret of a
    stored action of the same kind and the same destination (the first such, each stored
    action used once). A MASK with no such action stays, and :func:`parse_actions` refuses
    it."""
    if not isinstance(new, list):
        return new
    unused = list(old)
    out: list[object] = []
    for entry in new:
        if isinstance(entry, Mapping) and isinstance(entry.get("config"), Mapping):
            config = dict(entry["config"])
            kind = entry.get("kind")
            if MASK in config.values() and isinstance(kind, str):
                match = next(
                    (
                        a
                        for a in unused
                        if a.kind == kind
                        and _destination(kind, a.config) == _destination(kind, config)
                    ),
                    None,
                )
                if match is not None:
                    unused.remove(match)
                    for k, v in config.items():
                        if v == MASK and k in match.config:
                            config[k] = match.config[k]
            entry = {**entry, "config": config}
        out.append(entry)
    return out


def triggers_of(event: AlarmEvent) -> tuple[str, ...]:
    """Which triggers an alarm history event fires (none for most)."""
    if event.annunciated:
        return ("activated",)
    if event.cause is Cause.CONDITION_CLEARED and event.from_state in ANNUNCIATING:
        return ("cleared",)
    return ()
