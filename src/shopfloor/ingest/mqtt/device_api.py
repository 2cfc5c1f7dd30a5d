"""The JSON device API over MQTT: topics, telemetry forms, attributes and command responses.

Topics (``sf/v1/{tenant}/{device}/...``, see docs/mqtt.md):

- ``telemetry``: ``{"temp": 21.5}`` (server time), ``{"ts": 1767225600000, "values": {...}}``
  (one instant), or any body ``POST /api/v1/ingest`` takes, the device taken from the topic;
- ``attributes``: a JSON object of client-reported attributes;
- ``commands/{id}/response``: ``{"ok": true, "value": ..., "message": ...}``.

Every telemetry form is rewritten into an HTTP ingest body (:func:`decode_doc`), so the rules
(types, timestamps, all-or-nothing) are those of the HTTP ingest API; short-form messages are
checked one by one and decoded together, a flush at a time (:func:`decode_short`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shopfloor.core.errors import BadInput, Malformed
from shopfloor.ingest.decode import Columns, decode_doc

PREFIX: Final = "sf/v1/"
HTTP_FORM_KEYS: Final = frozenset({"points", "signal"})

# The platform's subscriptions to the JSON API (the device side of each topic).
SUBSCRIPTIONS: Final = (
    "sf/v1/+/+/telemetry",
    "sf/v1/+/+/attributes",
    "sf/v1/+/+/commands/+/response",
)


@dataclass(frozen=True)
class DeviceTopic:
    tenant: str
    device: str
    kind: str  # telemetry | attributes | response
    command_id: str | None = None


def parse_topic(topic: str) -> DeviceTopic | None:
    """The device topic a message came on, or None when it is none of the device API's."""
    if not topic.startswith(PREFIX):
        return None
    parts = topic[len(PREFIX) :].split("/")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        return None
    tenant, device, rest = parts[0], parts[1], parts[2:]
    if rest == ["telemetry"]:
        return DeviceTopic(tenant, device, "telemetry")
    if rest == ["attributes"]:
        return DeviceTopic(tenant, device, "attributes")
    if len(rest) == 3 and rest[0] == "commands" and rest[2] == "response" and rest[1]:
        return DeviceTopic(tenant, device, "response", rest[1])
    return None


def desired_topic(tenant: str, device: str) -> str:
    return f"{PREFIX}{tenant}/{device}/attributes/desired"


def command_topic(tenant: str, device: str, command_id: str) -> str:
    return f"{PREFIX}{tenant}/{device}/commands/{command_id}"


_last_server_ns = 0


def server_now_ns() -> int:
    """Receive time for a message without its own: strictly increasing, so two messages of a
    device in the same clock tick (or across a clock step back) do not overwrite each other
    (a duplicate (signal, ts) keeps the last write)."""
    global _last_server_ns
    _last_server_ns = max(time.time_ns(), _last_server_ns + 1)
    return _last_server_ns


def load_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"malformed JSON: {exc}", "payload") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{what} must be a JSON object, got {type(doc).__name__}", "payload")
    return doc


def _scalar(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise BadInput(
        f"signal {name!r}: a value must be a number, boolean or string, got {type(value).__name__}",
        f"values.{name}",
    )


def _telemetry_doc(doc: dict[str, Any], device: str, max_points: int) -> Columns:
    """One telemetry message (not the short form) as columns for ``device``, all or nothing."""
    if not doc:
        raise BadInput("telemetry holds no values", "payload")
    if HTTP_FORM_KEYS & doc.keys() or ("values" in doc and isinstance(doc.get("ts"), list)):
        sent = doc.get("device")
        if sent is not None and sent != device:
            raise BadInput(f"device {sent!r} differs from the topic's device {device!r}", "device")
        body = {**doc, "device": device}
    elif "values" in doc:
        values = doc["values"]
        if not isinstance(values, dict) or not values:
            raise BadInput("must be an object of signal name -> value", "values")
        ts = doc.get("ts")
        body = {
            "device": device,
            "ts": [server_now_ns() if ts is None else ts],
            "ts_unit": "ns" if ts is None else doc.get("ts_unit", "ms"),
            "values": {k: [_scalar(k, v)] for k, v in values.items()},
        }
    else:
        body = {
            "device": device,
            "ts": [server_now_ns()],
            "ts_unit": "ns",
            "values": {k: [_scalar(k, v)] for k, v in doc.items()},
        }
    return _checked(decode_doc(body, max_points))


@dataclass(frozen=True, slots=True)
class ShortTelemetry:
    """A short-form message (``{"temp": 21.5}``), checked but not yet decoded: the short messages
    of one flush are decoded together (:func:`decode_short`), as one columnar batch."""

    device: str
    names: list[str]
    values: list[Any]
    ts_ns: int

    def __len__(self) -> int:
        return len(self.names)


def parse_telemetry(payload: bytes, device: str, max_points: int) -> Columns | ShortTelemetry:
    """One telemetry message: the short form checked for :func:`decode_short`, every other form
    decoded into columns now (all or nothing)."""
    doc = load_object(payload, "telemetry")
    if not doc or HTTP_FORM_KEYS & doc.keys() or "values" in doc:
        return _telemetry_doc(doc, device, max_points)
    names, values = [], []
    for k, v in doc.items():
        v = _scalar(k, v)
        if v is None:  # as in the frame form: no sample of that signal
            continue
        if not k or "/" in k:
            raise BadInput(f"signal {k!r}: names on MQTT must be non-empty, without '/'", "signal")
        names.append(k)
        values.append(v)
    if not names:
        raise BadInput("telemetry holds no values", "payload")
    return ShortTelemetry(device, names, values, server_now_ns())


def decode_short(items: list[ShortTelemetry], max_points: int) -> Columns:
    """Short-form messages of several devices as one batch (names ``device/signal``)."""
    signals: list[str] = []
    ts: list[int] = []
    values: list[Any] = []
    for it in items:
        signals.extend(f"{it.device}/{n}" for n in it.names)
        ts.extend([it.ts_ns] * len(it.names))
        values.extend(it.values)
    return decode_doc({"signal": signals, "ts": ts, "ts_unit": "ns", "value": values}, max_points)


def _checked(cols: Columns) -> Columns:
    for name in cols.signal_names():
        # "other-device/signal" would write into another device's signals: the topic is the
        # only device a message may carry (the broker checked it against the sender).
        if "/" in name:
            raise BadInput(f"signal {name!r}: names on MQTT must not contain '/'", "signal")
    return cols


class CommandWaiters:
    """Command calls waiting for their device's response, matched by command id."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = {}

    def expect(self, tenant: str, device: str, command_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(tenant, device, command_id)] = fut
        return fut

    def forget(self, tenant: str, device: str, command_id: str) -> None:
        self._waiting.pop((tenant, device, command_id), None)

    def resolve(self, tenant: str, device: str, command_id: str, response: dict[str, Any]) -> bool:
        """Hand a response to its waiting call; False when nobody waits for it (late, unknown)."""
        fut = self._waiting.pop((tenant, device, command_id), None)
        if fut is None or fut.done():
            return False
        fut.set_result(response)
        return True
