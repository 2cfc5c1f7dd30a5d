"""The MQTT action: publish the event as JSON to a topic through an injected publisher.

The caller injects ``publish(topic, payload, qos)`` (the platform's ``MqttService.publish``,
ideally bound to a tenant's own topic prefix). Topics of the platform's device API
(``sf/...``), Sparkplug (``spBv1.0/...``) and the broker (``$...``) are refused: an alarm
action must not speak as the platform to devices (commands have their own action).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final

import orjson
from pydantic import Field, field_validator

from shopfloor.core.hooks import hookimpl
from shopfloor.rules.actions.base import (
    Action,
    ActionConfig,
    ActionDeps,
    ActionResult,
    EventLike,
    PublishFn,
    event_payload,
    event_row,
    parse_config,
)

__all__ = ["MqttAction", "MqttConfig"]

RESERVED: Final = ("sf/", "spBv1.0/", "$")


class MqttConfig(ActionConfig):
    topic: str = Field(min_length=1, max_length=256)
    qos: int = Field(default=1, ge=0, le=2)

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if any(c in v for c in "+#\x00"):
            raise ValueError("topic must not contain wildcards (+, #) or NUL")
        if v.startswith(RESERVED):
            raise ValueError(f"topics under {', '.join(RESERVED)} belong to the platform")
        return v


class MqttAction(Action):
    kind: ClassVar[str] = "mqtt"
    config_model: ClassVar[type[ActionConfig]] = MqttConfig

    def __init__(self, config: object, publish: PublishFn) -> None:
        self.config = parse_config(MqttConfig, config)
        self.publish = publish

    @classmethod
    def build(cls, config: object, deps: ActionDeps) -> MqttAction:
        if deps.publish is None:
            raise ValueError("the mqtt action needs a publisher (ActionDeps.publish)")
        return cls(config, deps.publish)

    async def run(self, event: EventLike, *, signal_ids: Sequence[int] = ()) -> ActionResult:
        payload = orjson.dumps(event_payload(event_row(event)))
        try:
            await self.publish(self.config.topic, payload, self.config.qos)
        except Exception as exc:
            return ActionResult(False, self.kind, f"{type(exc).__name__}: {exc}")
        return ActionResult(True, self.kind, f"published to {self.config.topic}")


@hookimpl
def shopfloor_alarm_actions() -> dict[str, type[Action]]:
    return {MqttAction.kind: MqttAction}
