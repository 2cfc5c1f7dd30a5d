"""The command action: send a setpoint to a device when an alarm event happens.

The caller injects ``command(device, payload) -> response`` (the platform's
``MqttService.command`` bound to the rule's tenant); the payload is the device API's
``{"signal": ..., "value": ...}``. The result is ``ok`` when the device answers
``{"ok": true, ...}``; a timeout or an error is ``ok=False`` with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from shopfloor.core.hooks import hookimpl
from shopfloor.rules.actions.base import (
    Action,
    ActionConfig,
    ActionDeps,
    ActionResult,
    CommandFn,
    EventLike,
    event_row,
    parse_config,
)

__all__ = ["CommandAction", "CommandConfig"]


class CommandConfig(ActionConfig):
    device: str = Field(min_length=1, max_length=128, pattern=r"^[^/+#\s]+$")
    signal: str = Field(min_length=1, max_length=128)
    value: bool | int | float | str


class CommandAction(Action):
    kind: ClassVar[str] = "command"
    config_model: ClassVar[type[ActionConfig]] = CommandConfig

    def __init__(self, config: object, command: CommandFn) -> None:
        self.config = parse_config(CommandConfig, config)
        self.command = command

    @classmethod
    def build(cls, config: object, deps: ActionDeps) -> CommandAction:
        if deps.command is None:
            raise ValueError("the command action needs a command sender (ActionDeps.command)")
        return cls(config, deps.command)

    async def run(self, event: EventLike, *, signal_ids: Sequence[int] = ()) -> ActionResult:
        event_row(event)  # a malformed event is refused before anything is sent
        cfg = self.config
        payload: dict[str, Any] = {"signal": cfg.signal, "value": cfg.value}
        try:
            response = await self.command(cfg.device, payload)
        except Exception as exc:
            return ActionResult(False, self.kind, f"{type(exc).__name__}: {exc}")
        ok = response.get("ok") is True
        message = response.get("message")
        reason = str(message) if message else ("done" if ok else "the device refused")
        return ActionResult(ok, self.kind, reason, response=dict(response))


@hookimpl
def shopfloor_alarm_actions() -> dict[str, type[Action]]:
    return {CommandAction.kind: CommandAction}
