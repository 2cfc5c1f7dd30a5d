"""Timestamp parsing into int64 nanoseconds UTC, column at a time."""

from __future__ import annotations

import math
import time
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.core.errors import BadInput

UNIT_NS: Final = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
DAY_NS: Final = 86_400 * 1_000_000_000
MAX_DURATION_NS: Final = 1000 * 365 * DAY_NS


def now_ns() -> int:
    return time.time_ns()


def parse_ts_column(raw: pa.Array, unit: str = "ms", field: str = "ts") -> npt.NDArray[np.int64]:
    """Turn an Arrow column of epoch numbers or RFC 3339 strings into int64 ns UTC.

    Strings must carry a zone offset ('Z' or '+01:00'): a naive timestamp is rejected
    because nobody can tell which clock it was read from.
    """
    if unit not in UNIT_NS:
        raise BadInput(f"unknown unit {unit!r}, use one of {sorted(UNIT_NS)}", "ts_unit")
    if raw.null_count:
        first = int(np.flatnonzero(np.asarray(raw.is_null()))[0])
        raise BadInput(f"timestamp missing (null) at index {first}", field)
    t = raw.type
    if pa.types.is_integer(t):
        # int64 needs no cast (a compute call costs more than the rest for a small batch).
        try:
            ints = raw.to_numpy() if t == pa.int64() else np.asarray(raw.cast(pa.int64()))
        except pa.ArrowInvalid:
            raise BadInput("timestamp out of range", field) from None
        return _scale(ints.astype(np.int64, copy=False), UNIT_NS[unit], field)
    if pa.types.is_floating(t):
        f = np.asarray(raw, dtype=np.float64)
        if not np.isfinite(f).all():
            raise BadInput("timestamp is not a finite number", field)
        return _scale(np.round(f * UNIT_NS[unit]).astype(np.int64), 1, field)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return parse_iso(raw, field)
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise BadInput("naive timestamps are not accepted; give a UTC offset", field)
        try:
            ns = raw.cast(pa.timestamp("ns", "UTC"))
        except pa.ArrowInvalid:
            raise BadInput("timestamp out of range", field) from None
        return np.asarray(ns.cast(pa.int64()), dtype=np.int64)
    raise BadInput(f"timestamps must be numbers or RFC 3339 strings, not {t}", field)


def parse_iso(raw: pa.Array, field: str = "ts") -> npt.NDArray[np.int64]:
    has_zone = pc.match_substring_regex(raw, r"(Z|z|[+-]\d\d:?\d\d)$")
    if not pc.all(has_zone).as_py():
        bad = int(np.flatnonzero(~np.asarray(has_zone.to_numpy(zero_copy_only=False)))[0])
        raise BadInput(
            f"timestamp {raw[bad].as_py()!r} at index {bad} has no UTC offset; add 'Z' or '+hh:mm'",
            field,
        )
    try:
        parsed = pc.cast(raw, pa.timestamp("ns", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInput(f"not an RFC 3339 timestamp: {exc}", field) from None
    return np.asarray(parsed.cast(pa.int64()), dtype=np.int64)


def _scale(ints: npt.NDArray[np.int64], factor: int, field: str) -> npt.NDArray[np.int64]:
    limit = np.iinfo(np.int64).max // factor
    if len(ints) and (ints.max() > limit or ints.min() < 0):
        raise BadInput("timestamp out of range", field)
    return ints * factor


def check_range(ts: npt.NDArray[np.int64], field: str = "ts", future_ns: int = DAY_NS) -> None:
    """Reject timestamps before 1990 or more than ``future_ns`` ahead of now."""
    from shopfloor.core.types import MIN_TS_NS

    if not len(ts):
        return
    lo, hi = int(ts.min()), int(ts.max())
    if lo < MIN_TS_NS:
        i = int(np.argmin(ts))
        raise BadInput(f"timestamp at index {i} is before 1990-01-01 ({_iso(lo)})", field)
    if hi > now_ns() + future_ns:
        i = int(np.argmax(ts))
        raise BadInput(f"timestamp at index {i} is in the future ({_iso(hi)})", field)


def _iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns")) + "Z"


def to_iso(ns: int) -> str:
    return _iso(ns)


_DURATION_UNITS: Final = {
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": DAY_NS,
    "w": 7 * DAY_NS,
}


def parse_duration(text: str, field: str = "interval") -> int:
    """'500ms', '10s', '1m', '2h', '1d', '1w' or plain seconds into nanoseconds (> 0)."""
    raw = text.strip().lower()
    for suffix in sorted(_DURATION_UNITS, key=len, reverse=True):
        if raw.endswith(suffix):
            number, factor = raw[: -len(suffix)], _DURATION_UNITS[suffix]
            break
    else:
        number, factor = raw, _DURATION_UNITS["s"]
    try:
        amount = float(number)
    except ValueError:
        raise BadInput(f"{text!r} is not a duration such as 30s, 5m, 1h or 1d", field) from None
    if not math.isfinite(amount) or not 0 < amount * factor <= MAX_DURATION_NS:
        raise BadInput(f"{text!r} must be longer than zero and at most 1000 years", field)
    return round(amount * factor)


def parse_instant(text: str, field: str, now: int | None = None) -> int:
    """An RFC 3339 time, integer epoch milliseconds, 'now', or '-1h' style relative to now."""
    raw = text.strip()
    current = now_ns() if now is None else now
    if raw == "now":
        return current
    if raw.startswith("-") and not raw[1:].isdigit():
        return current - parse_duration(raw[1:], field)
    if raw.lstrip("-").isdigit():
        ns = int(raw) * UNIT_NS["ms"]
        if not 0 <= ns <= np.iinfo(np.int64).max:
            raise BadInput(f"{text!r} is outside 1970..2262", field)
        return ns
    return int(parse_iso(pa.array([raw]), field)[0])
