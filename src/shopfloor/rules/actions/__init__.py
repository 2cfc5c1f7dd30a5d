"""Alarm actions: what happens when an alarm event occurs (webhook, e-mail, MQTT, command).

Action kinds are found through pluggy (``shopfloor.core.hooks``): every plugin in the
``shopfloor.actions`` entry-point group answers ``shopfloor_alarm_actions()`` with its
classes by kind. The four built-ins are registered there exactly like a third party's.

    classes = action_classes()
    action = build_action("webhook", {"url": ..., "secret": ...}, ActionDeps(egress_check=...))
    result = await action.run(event, signal_ids=rule_signal_ids)

See docs/actions.md.
"""

from __future__ import annotations

import re
from typing import Final

import pluggy

from shopfloor.core.errors import BadInput
from shopfloor.core.hooks import plugin_manager
from shopfloor.rules.actions.base import (
    Action,
    ActionConfig,
    ActionDeps,
    ActionResult,
    EgressCheck,
    EventLike,
    event_payload,
    event_row,
    parse_config,
)

__all__ = [
    "BUILTIN_KINDS",
    "Action",
    "ActionConfig",
    "ActionDeps",
    "ActionResult",
    "EgressCheck",
    "EventLike",
    "action_class",
    "action_classes",
    "build_action",
    "event_payload",
    "event_row",
    "parse_config",
]

BUILTIN_KINDS: Final = ("command", "email", "mqtt", "webhook")
_KIND: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def action_classes(pm: pluggy.PluginManager | None = None) -> dict[str, type[Action]]:
    """Every installed action class by kind, from the plugins' hook answers.

    A kind offered twice by different classes, a bad kind name or a class that is not an
    :class:`Action` of that kind is a plugin bug: ValueError naming it."""
    manager = plugin_manager() if pm is None else pm
    out: dict[str, type[Action]] = {}
    for answer in manager.hook.shopfloor_alarm_actions():
        for kind, cls in dict(answer).items():
            if not isinstance(kind, str) or not _KIND.match(kind):
                raise ValueError(f"action kind {kind!r} must be 1-32 of a-z, 0-9, _")
            if not (isinstance(cls, type) and issubclass(cls, Action)):
                raise ValueError(f"action {kind!r}: {cls!r} is not an Action subclass")
            if getattr(cls, "kind", None) != kind:
                raise ValueError(f"action {kind!r}: {cls.__qualname__}.kind differs")
            if out.get(kind, cls) is not cls:
                raise ValueError(
                    f"action kind {kind!r} offered twice: {out[kind].__module__} and "
                    f"{cls.__module__}"
                )
            out[kind] = cls
    return dict(sorted(out.items()))


def action_class(kind: str, pm: pluggy.PluginManager | None = None) -> type[Action]:
    classes = action_classes(pm)
    try:
        return classes[kind]
    except KeyError:
        known = ", ".join(classes) or "none"
        raise BadInput(f"unknown action kind {kind!r}; installed: {known}", "kind") from None


def build_action(
    kind: str, config: object, deps: ActionDeps, pm: pluggy.PluginManager | None = None
) -> Action:
    """An action of ``kind`` from its config dict (BadInput naming the field)."""
    return action_class(kind, pm).build(config, deps)
