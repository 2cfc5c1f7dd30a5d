"""What every alarm action shares: the base class, its result, config parsing, the payload.

An action is built from a plain dict (validated strictly, unknown keys refused, errors as
:class:`BadInput` naming the field) plus the dependencies the caller injects
(:class:`ActionDeps`), and runs once per alarm history event.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shopfloor.core.errors import BadInput
from shopfloor.rules.alarm_history import Row, event_from_row, event_to_row
from shopfloor.rules.alarms import AlarmEvent

__all__ = [
    "Action",
    "ActionConfig",
    "ActionDeps",
    "ActionResult",
    "CommandFn",
    "EgressCheck",
    "EventLike",
    "PublishFn",
    "Sleep",
    "event_payload",
    "event_row",
    "parse_config",
]

EventLike = AlarmEvent | Mapping[str, object]

# check(destination, signal_ids): returns (or awaits) on allowed, raises (Forbidden) on refusal.
# A returned object whose ``allowed`` is False (an egress Decision) or a returned False also
# refuses.
EgressCheck = Callable[[str, Sequence[int]], object]
PublishFn = Callable[[str, bytes, int], Awaitable[None]]
CommandFn = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any]]]
Sleep = Callable[[float], Awaitable[None]]

PAYLOAD_TYPE: Final = "shopfloor.alarm_event"

C = TypeVar("C", bound=BaseModel)


class ActionConfig(BaseModel):
    """Base of every action config: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    kind: str
    reason: str = ""
    attempts: int = 1  # sends tried (0: refused before sending)
    status: int | None = None  # the last HTTP status (webhook)
    response: Mapping[str, Any] | None = None  # the device's answer (command)


@dataclass(frozen=True, slots=True)
class ActionDeps:
    """What the caller injects; an action that needs a missing one refuses to be built."""

    egress_check: EgressCheck | None = None
    publish: PublishFn | None = None
    command: CommandFn | None = None
    sleep: Sleep = field(default=asyncio.sleep)


def parse_config(model: type[C], raw: object) -> C:
    """Validate ``raw`` into ``model``; the first error becomes BadInput naming its field."""
    if isinstance(raw, model):
        return raw
    if not isinstance(raw, Mapping):
        raise BadInput(f"an action config must be a mapping, not {type(raw).__name__}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or None
        raise BadInput(err["msg"], where) from None


def event_row(event: EventLike) -> Row:
    """The JSON-safe row of an event; a mapping is validated first (BadInput by field)."""
    if isinstance(event, AlarmEvent):
        return event_to_row(event)
    return event_to_row(event_from_row(event))


def event_payload(row: Row) -> dict[str, Any]:
    """The JSON document webhook and MQTT actions send for one event."""
    return {"type": PAYLOAD_TYPE, "event": row}


async def call_check(check: EgressCheck, destination: str, signal_ids: Sequence[int]) -> str | None:
    """Run an egress check; None when allowed, else why not. Fails closed on any error."""
    try:
        res = check(destination, list(signal_ids))
        if inspect.isawaitable(res):
            res = await res
    except Exception as exc:
        return f"egress refused: {exc}"
    if res is False or getattr(res, "allowed", True) is False:
        return "egress refused by the egress policy"
    return None


class Action(ABC):
    """Base of every alarm action; subclasses set ``kind`` and ``config_model``."""

    kind: ClassVar[str]
    config_model: ClassVar[type[ActionConfig]]

    @classmethod
    @abstractmethod
    def build(cls, config: object, deps: ActionDeps) -> Action:
        """An instance from a config dict and the injected dependencies."""

    @abstractmethod
    async def run(self, event: EventLike, *, signal_ids: Sequence[int] = ()) -> ActionResult:
        """Act on one alarm history event; failures come back as ``ok=False``, never raise
        (a malformed event mapping aside: BadInput by field).

        ``signal_ids`` are the signals whose data the event carries (the rule's inputs),
        given by the rule engine, never by the action's config: actions whose data leaves
        the platform check them against the egress policy and refuse without them."""
