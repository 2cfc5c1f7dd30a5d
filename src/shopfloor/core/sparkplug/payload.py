"""Encoding and decoding of Sparkplug B payloads: metric values, properties, timestamps.

The protobuf classes come from ``sparkplug_b_pb2``, generated from the specification's
``sparkplug_b.proto`` beside this file; everything that knows protobuf field names is here, so
the node state machine deals in plain Python values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, cast

from shopfloor.core.quality import GOOD
from shopfloor.core.sparkplug import sparkplug_b_pb2 as pb

__all__ = [
    "BOOLEAN",
    "DATATYPES",
    "DOUBLE",
    "FLOAT",
    "INT64",
    "STRING",
    "UINT32",
    "UINT64",
    "MetricValue",
    "command_ts",
    "decode",
    "encode",
    "metric_value",
]

# Sparkplug DataType numbers (the enum in sparkplug_b.proto).
INT8: Final = 1
INT16: Final = 2
INT32: Final = 3
INT64: Final = 4
UINT8: Final = 5
UINT16: Final = 6
UINT32: Final = 7
UINT64: Final = 8
FLOAT: Final = 9
DOUBLE: Final = 10
BOOLEAN: Final = 11
STRING: Final = 12
DATETIME: Final = 13
TEXT: Final = 14

# The datatypes a signal can be given by a hint in the configuration.
DATATYPES: Final = {
    "Double": DOUBLE,
    "Float": FLOAT,
    "Boolean": BOOLEAN,
    "Int64": INT64,
    "String": STRING,
}

# Key of the metric property that carries a non-good OPC UA status code.
QUALITY: Final = "Quality"
MESSAGE: Final = "Message"
# Key of the property an answer to a DCMD carries: the timestamp (ms) of the command metric it
# answers, so the host tells the answer from a poll or subscription update of the same metric.
COMMAND: Final = "Command"

_SIGNED_BITS: Final = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One metric to encode: ``value`` None means a null (failed read) value."""

    name: str | None
    alias: int | None
    datatype: int
    value: float | int | bool | str | None
    ts_ms: int | None = None
    quality: int = GOOD
    historical: bool = False
    message: str | None = None
    command_ts: int | None = None  # set on an answer: the COMMAND property


def encode(ts_ms: int, seq: int | None, metrics: list[MetricValue]) -> bytes:
    """One Sparkplug payload; ``seq`` None for NDEATH, which carries none."""
    payload = pb.Payload(timestamp=ts_ms)
    if seq is not None:
        payload.seq = seq
    for m in metrics:
        _fill(payload.metrics.add(), m)
    return cast(bytes, payload.SerializeToString())


def decode(raw: bytes) -> pb.Payload:
    """Parse a payload; raises ``ValueError`` naming the problem when it is not Sparkplug B."""
    try:
        return cast(pb.Payload, pb.Payload.FromString(raw))
    except Exception as exc:  # protobuf raises its own DecodeError, a plain Exception subclass
        raise ValueError(f"not a Sparkplug B payload ({len(raw)} bytes): {exc}") from exc


def command_ts(metric: pb.Payload.Metric) -> int | None:
    """The COMMAND property of an answer (the answered command's timestamp), if it has one."""
    if not metric.HasField("properties"):
        return None
    for key, value in zip(metric.properties.keys, metric.properties.values, strict=False):
        if key == COMMAND and value.WhichOneof("value") == "long_value":
            return int(value.long_value)
    return None


def metric_value(metric: pb.Payload.Metric, datatype: int) -> float | int | bool | str | None:
    """The Python value of a received metric, read as ``datatype`` where it has none itself."""
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    if field is None:
        return None
    value: Any = getattr(metric, field)
    dt = metric.datatype if metric.HasField("datatype") else datatype
    bits = _SIGNED_BITS.get(dt)
    if bits is not None and isinstance(value, int) and not isinstance(value, bool):
        # Signed integers travel as their two's complement in the unsigned fields.
        value &= (1 << bits) - 1
        if value >= 1 << (bits - 1):
            value -= 1 << bits
    if isinstance(value, (int, float, bool, str)):
        return value
    raise ValueError(f"metric {metric.name or metric.alias}: {field} values are not supported")


def _fill(out: pb.Payload.Metric, m: MetricValue) -> None:
    if m.name is not None:
        out.name = m.name
    if m.alias is not None:
        out.alias = m.alias
    # Births carry the datatype; data messages leave it out (it is known from the birth).
    if m.name is not None:
        out.datatype = m.datatype
    if m.ts_ms is not None:
        out.timestamp = m.ts_ms
    if m.historical:
        out.is_historical = True
    if m.quality != GOOD or m.message is not None or m.command_ts is not None:
        props = out.properties
        if m.quality != GOOD:
            props.keys.append(QUALITY)
            # The OPC UA status code is a UInt32; carried as such so it reads back unchanged.
            props.values.add(type=UINT32, int_value=m.quality & 0xFFFFFFFF)
        if m.message is not None:
            props.keys.append(MESSAGE)
            props.values.add(type=STRING, string_value=m.message)
        if m.command_ts is not None:
            props.keys.append(COMMAND)
            props.values.add(type=UINT64, long_value=m.command_ts)
    _set_value(out, m.datatype, m.value)


def _set_value(
    out: pb.Payload.Metric, datatype: int, value: float | int | bool | str | None
) -> None:
    # NaN is how a Reading says "no value" (a failed read): Sparkplug says that with is_null.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        out.is_null = True
    elif datatype == DOUBLE:
        out.double_value = float(value)
    elif datatype == FLOAT:
        out.float_value = float(value)
    elif datatype == BOOLEAN:
        out.boolean_value = bool(value)
    elif datatype == STRING:
        out.string_value = str(value)
    elif datatype in (INT64, UINT64):
        out.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
        out.int_value = int(value) & 0xFFFFFFFF
    else:
        raise ValueError(f"datatype {datatype} is not supported for encoding")
