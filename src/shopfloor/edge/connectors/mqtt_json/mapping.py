"""JSON payload -> points, by a :class:`~.config.PayloadMapping`.

A message is taken whole or not at all: invalid JSON, a missing timestamp or sample array, an
unparsable timestamp or a value of the wrong kind (an object where a number should be) raise
:class:`PayloadError` and nothing of the message is kept. A mapped value that is simply absent
only drops that point and is counted as a missing field, because devices often leave out
fields they have no value for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.mqtt_json.config import PayloadMapping
from shopfloor.edge.connectors.mqtt_json.jsonpath import JsonPath, PathMissing

__all__ = ["Decoded", "PayloadDecoder", "PayloadError", "to_value"]

_UNIT_NS: Final = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Timestamps outside these years are a wrong unit or an unset device clock, not data.
_TS_MIN_NS: Final = 946_684_800 * 10**9  # 2000-01-01
_TS_MAX_NS: Final = 4_102_444_800 * 10**9  # 2100-01-01
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class PayloadError(ValueError):
    """The message cannot be used; the text says what is wrong with it."""


@dataclass
class Decoded:
    """The points of one message, in parallel lists."""

    signals: list[str] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    text: list[str | None] = field(default_factory=list)
    has_text: bool = False
    missing: int = 0

    def __len__(self) -> int:
        return len(self.signals)


def to_value(raw: Any, where: str) -> tuple[float, int, str | None]:
    """(value, quality, text) of one JSON value: numbers and true/false as numbers, strings as
    text, null as a bad-quality point; objects and arrays are an error."""
    if isinstance(raw, bool):
        return (1.0 if raw else 0.0), GOOD, None
    if isinstance(raw, int | float):
        return float(raw), GOOD, None
    if isinstance(raw, str):
        return math.nan, GOOD, raw
    if raw is None:
        return math.nan, BAD, None
    kind = "an object" if isinstance(raw, dict) else "an array"
    raise PayloadError(f"{where}: expected a number, true/false or text, got {kind}")


class PayloadDecoder:
    """Compiled paths of one mapping; :meth:`decode` turns a payload into points."""

    def __init__(self, mapping: PayloadMapping) -> None:
        self.mapping = mapping
        self._samples = JsonPath(mapping.samples) if mapping.samples is not None else None
        self._ts = JsonPath(mapping.timestamp) if mapping.timestamp is not None else None
        self._unit = mapping.timestamp_unit
        self._values = [(name, JsonPath(p)) for name, p in (mapping.values or {}).items()]
        self._fields = (
            JsonPath(mapping.numeric_fields) if mapping.numeric_fields is not None else None
        )

    def decode(self, payload: bytes, arrival_ns: int) -> Decoded:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None
        if self._samples is None:
            samples = [doc]
        else:
            try:
                samples = self._samples.get(doc)
            except PathMissing as exc:
                raise PayloadError(f"no sample array: {exc}") from None
            if not isinstance(samples, list):
                raise PayloadError(f"samples {self._samples.text!r} is not an array")
        out = Decoded()
        for k, sample in enumerate(samples):
            where = f"sample {k}" if self._samples is not None else "payload"
            ts = self._timestamp(sample, arrival_ns, where)
            if self._fields is not None:
                self._numeric_fields(sample, ts, out, where)
            else:
                self._mapped(sample, ts, out, where)
        if not out:
            raise PayloadError(
                "no values in the message" + (f" ({out.missing} missing)" if out.missing else "")
            )
        return out

    def _mapped(self, sample: Any, ts: int, out: Decoded, where: str) -> None:
        for name, path in self._values:
            try:
                raw = path.get(sample)
            except PathMissing:
                out.missing += 1
                continue
            value, quality, text = to_value(raw, f"{where}, {name} at {path.text!r}")
            _append(out, name, ts, value, quality, text)

    def _numeric_fields(self, sample: Any, ts: int, out: Decoded, where: str) -> None:
        assert self._fields is not None
        try:
            obj = self._fields.get(sample)
        except PathMissing as exc:
            raise PayloadError(f"{where}: {exc}") from None
        if not isinstance(obj, dict):
            raise PayloadError(f"{where}: numeric_fields {self._fields.text!r} is not an object")
        for name, raw in obj.items():
            # Text, null and nested objects are not measurements here: left out, not an error.
            if isinstance(raw, int | float):
                _append(out, name, ts, float(raw), GOOD, None)

    def _timestamp(self, sample: Any, arrival_ns: int, where: str) -> int:
        if self._ts is None:
            return arrival_ns
        try:
            raw = self._ts.get(sample)
        except PathMissing as exc:
            raise PayloadError(f"{where}: no timestamp: {exc}") from None
        if self._unit == "rfc3339":
            ts = _parse_rfc3339(raw, where)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            ts = raw * _UNIT_NS[self._unit]
        elif isinstance(raw, float) and math.isfinite(raw):
            ts = _float_ns(raw, _UNIT_NS[self._unit])
        else:
            raise PayloadError(f"{where}: timestamp {raw!r} is not a number of {self._unit}")
        if not _TS_MIN_NS <= ts < _TS_MAX_NS:
            raise PayloadError(
                f"{where}: timestamp {raw!r} ({self._unit}) is outside 2000..2100; "
                "check timestamp_unit or the device clock"
            )
        return ts


def _append(out: Decoded, name: str, ts: int, value: float, quality: int, text: str | None) -> None:
    out.signals.append(name)
    out.ts_ns.append(ts)
    out.values.append(value)
    out.quality.append(quality)
    out.text.append(text)
    if text is not None:
        out.has_text = True


def _float_ns(raw: float, unit_ns: int) -> int:
    """Nanoseconds of a fractional timestamp, without float64's rounding of 1.7e18 ns.

    The whole and the fractional part are scaled apart. Seconds or milliseconds since 1970 as a
    float carry about a quarter of a microsecond of precision, so their fraction is rounded to
    whole microseconds: 1700000000.25 s is exactly ...250000000 ns, not ...249999872.
    """
    whole = math.floor(raw)
    quantum = 1_000 if unit_ns >= 1_000_000 else 1
    return whole * unit_ns + round((raw - whole) * unit_ns / quantum) * quantum


def _parse_rfc3339(raw: Any, where: str) -> int:
    if not isinstance(raw, str):
        raise PayloadError(f"{where}: timestamp {raw!r} is not an RFC 3339 string")
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise PayloadError(f"{where}: timestamp {raw!r} is not RFC 3339") from None
    if dt.tzinfo is None:
        raise PayloadError(f"{where}: timestamp {raw!r} has no UTC offset")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
