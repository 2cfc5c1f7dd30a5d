"""Decoding ingest payloads straight into columns.

Three wire forms reach the same columns (signal name, timestamp, value, quality):

- columnar JSON (the fast path): ``{"device": "press-01", "signal": [...], "ts": [...],
  "value": [...], "quality": [...]}`` — parallel arrays, one entry per point;
- row JSON: ``{"device": "press-01", "points": [{"signal": ..., "ts": ..., "value": ...}, ...]}``;
- Arrow IPC stream with columns ``signal``, ``ts``, ``value`` and optional ``quality``.

orjson parses the body in C and pyarrow converts each list to a typed column in C++, so no
Python code runs per point. Signal names are dictionary-encoded, so the registry is asked once
per distinct signal. The one slow path: a single batch mixing string and numeric values, which
is classified point by point.

A batch is all-or-nothing: one bad point rejects the whole batch with an error naming the
field and the index of the first offender, and nothing of it is stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.core import quality as q
from shopfloor.core.errors import BadInput, Malformed, PayloadTooLarge
from shopfloor.core.timeutil import DAY_NS, UNIT_NS, check_range, now_ns, parse_ts_column
from shopfloor.core.types import MIN_TS_NS, DataType

ROW_FIELDS: Final = frozenset({"signal", "ts", "value", "quality"})

# pyarrow reads this variable on every conversion from a Python list; unset, the lookup raises
# and catches a KeyError each time (~1.3 us, several times per small MQTT message). An empty
# value reads as false, which is what unset means, so behaviour does not change.
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "")


@dataclass
class Columns:
    """A decoded batch before signal names are resolved to ids."""

    device: str | None
    signal: pa.DictionaryArray  # names, dictionary-encoded
    ts: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]  # NaN where a point carries text instead
    text: pa.Array | None  # string values, or None when the batch has none
    quality: npt.NDArray[np.uint32] | None
    # The data type each dictionary entry's values showed. Only needed to register new signals,
    # so it is worked out on first use (type inference costs more than the typed decode).
    infer_kinds: Callable[[], list[DataType]] = field(repr=False)
    _kinds: list[DataType] | None = field(default=None, repr=False)
    # Points without a value (failed reads, bad quality); None when every point has one.
    missing: npt.NDArray[np.bool_] | None = None
    # The dictionary as Python strings when the decoder had them anyway (saves a to_pylist).
    names: tuple[str, ...] | None = field(default=None, repr=False)

    def signal_names(self) -> tuple[str, ...]:
        if self.names is None:
            self.names = tuple(self.signal.dictionary.to_pylist())
        return self.names

    def __len__(self) -> int:
        return len(self.ts)

    def kinds(self) -> list[DataType]:
        if self._kinds is None:
            self._kinds = self.infer_kinds()
        return self._kinds

    def present_per_signal(self) -> npt.NDArray[np.bool_]:
        """Whether each dictionary entry has at least one point with a value in this batch."""
        n = len(self.signal.dictionary)
        if self.missing is None:
            return np.ones(n, bool)
        idx = np.asarray(self.signal.indices, dtype=np.int64)[~self.missing]
        return np.bincount(idx, minlength=n) > 0

    def text_per_signal(self) -> npt.NDArray[np.bool_]:
        """Whether each dictionary entry carries text values in this batch."""
        n = len(self.signal.dictionary)
        if self.text is None:
            return np.zeros(n, bool)
        if self.text.null_count == 0:
            return np.ones(n, bool)
        return np.array([k == DataType.STRING for k in self.kinds()])


def decode_json(body: bytes, max_points: int) -> Columns:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"malformed JSON: {exc}", "body") from None
    return decode_doc(doc, max_points)


def decode_doc(doc: Any, max_points: int) -> Columns:
    """Like decode_json, for a body already parsed (MQTT looks at it before it knows the form)."""
    if not isinstance(doc, dict):
        raise BadInput(
            "expected a JSON object with 'points' or 'signal'/'ts'/'value' arrays", "body"
        )
    device = _device(doc.get("device"))
    unit = doc.get("ts_unit", "ms")
    if not isinstance(unit, str):
        raise BadInput("must be one of s, ms, us, ns", "ts_unit")
    if "points" in doc:
        return _rows(doc["points"], device, unit, max_points)
    if "values" in doc:
        return _frames(doc, device, unit, max_points)
    missing = [k for k in ("signal", "ts", "value") if k not in doc]
    if missing:
        raise BadInput(
            "missing " + ", ".join(repr(m) for m in missing) + ": send 'points' (rows) or "
            "'signal', 'ts' and 'value' arrays (columns)",
            missing[0],
        )
    n = _length(doc["signal"], "signal", max_points)
    for key in ("ts", "value", "quality"):
        required = key != "quality"  # an absent or null quality means good
        if (required or doc.get(key) is not None) and _length(doc[key], key, max_points) != n:
            raise BadInput(f"has {len(doc[key])} entries but 'signal' has {n}", key)
    return _columns(device, doc["signal"], doc["ts"], doc["value"], doc.get("quality"), unit)


def _frames(doc: dict[str, Any], device: str | None, unit: str, max_points: int) -> Columns:
    """Frame form: shared timestamps and one array of values per signal.

    ``{"device": "press-01", "ts": [t0, t1], "values": {"temp": [21.5, 21.6], "rpm": [1450, null]}}``
    is what a poller has after reading every tag each cycle, and the cheapest to decode: the
    values become one 2-D array in a single call. ``null`` means no sample of that signal at
    that time (a failed read); the point is left out.
    """
    values = doc["values"]
    if not isinstance(values, dict) or not values:
        raise BadInput("must be an object of signal name -> array of values", "values")
    if "ts" not in doc:
        raise BadInput("the frame form needs 'ts', the timestamps its value arrays share", "ts")
    n_ts = _length(doc["ts"], "ts", max_points)
    names = list(values)
    if n_ts * len(names) > max_points:
        raise PayloadTooLarge(
            f"{n_ts * len(names)} points, at most {max_points} per batch", "values"
        )
    for name in names:
        col = values[name]
        if not isinstance(col, list) or len(col) != n_ts:
            got = f"{len(col)} values" if isinstance(col, list) else type(col).__name__
            raise BadInput(f"signal {name!r} has {got}, 'ts' has {n_ts} entries", f"values.{name}")
    try:
        # Without a dtype: numbers give a numeric 2-D array; text, nulls, nested arrays or
        # huge integers give anything else, and those go signal by signal below. (With
        # dtype=float numpy would turn "1.5" into 1.5 and [[1], [2]] into numbers.)
        raw_grid = np.array(list(values.values()))
    except (TypeError, ValueError, OverflowError):
        raw_grid = None
    numeric = raw_grid is not None and raw_grid.ndim == 2 and raw_grid.dtype.kind in "fiub"
    grid = raw_grid.astype(np.float64) if numeric and raw_grid is not None else None
    ts_ns = _plain_int_ts(doc["ts"], unit)
    if ts_ns is None:  # not the plain case, or a bad timestamp: this path names the error
        ts_ns = parse_ts_column(_as_array(doc["ts"], "ts", pa.int64()), unit, "ts")
        check_range(ts_ns, "ts")
    if grid is None:
        return _frames_mixed(device, names, values, ts_ns)
    flat = grid.ravel()
    key = tuple(names)
    # The timestamps once per signal; np.tile costs 4 us on a frame's few, this 1 us.
    ts_grid = np.empty((len(names), n_ts), np.int64)
    ts_grid[:] = ts_ns
    ts_all = ts_grid.reshape(-1)
    if np.isfinite(flat).all():
        signal = _frame_signals(key, n_ts)
    else:  # nulls (no sample) to drop, or an overflow to reject
        present = ~np.isnan(flat)
        idx = np.repeat(np.arange(len(names), dtype=np.int32), n_ts)[present]
        flat, ts_all = flat[present], ts_all[present]
        _check_finite(flat, "values")
        signal = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(names, pa.string()))
    return Columns(
        device, signal, ts_all, flat, None, None, lambda: _frame_kinds(values), names=key
    )


_PLAIN_TS_MAX: Final = 64


def _plain_int_ts(raw: Any, unit: str) -> npt.NDArray[np.int64] | None:
    """A frame's timestamps in their common form, a short list of integers within range,
    checked in Python: for ten of them the Arrow conversion, the scaling and the range check
    cost 15 us of numpy call overhead, this 3 us. None for anything else (floats, strings,
    booleans, a long list, a value out of range), which the general path decodes or refuses
    with its own message."""
    factor = UNIT_NS.get(unit)
    if type(raw) is not list or not raw or len(raw) > _PLAIN_TS_MAX or factor is None:
        return None
    for x in raw:
        if type(x) is not int:  # bool is a subclass of int, not this type
            return None
    if min(raw) * factor < MIN_TS_NS or max(raw) * factor > now_ns() + DAY_NS:
        return None
    out: npt.NDArray[np.int64] = np.array(raw, dtype=np.int64) * factor
    return out


# A poller sends the same signals with the same number of polls batch after batch: the
# dictionary-encoded name column of a gap-free frame depends on nothing else (Arrow arrays are
# immutable, so one can be shared).
_FRAME_SIGNALS: dict[tuple[tuple[str, ...], int], pa.DictionaryArray] = {}
_FRAME_SIGNALS_MAX: Final = 1024


def _frame_signals(names: tuple[str, ...], n_ts: int) -> pa.DictionaryArray:
    found = _FRAME_SIGNALS.get((names, n_ts))
    if found is None:
        idx = np.repeat(np.arange(len(names), dtype=np.int32), n_ts)
        found = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(names, pa.string()))
        if len(_FRAME_SIGNALS) >= _FRAME_SIGNALS_MAX:
            _FRAME_SIGNALS.clear()
        _FRAME_SIGNALS[(names, n_ts)] = found
    return found


def _frame_kinds(values: dict[str, list[Any]]) -> list[DataType]:
    """Per signal, int if all its values were JSON integers, bool if booleans, else float."""
    out = []
    for col in values.values():
        present = [v for v in col if v is not None]
        kind = _numeric_kind(present) if present else DataType.FLOAT
        out.append(kind if isinstance(kind, DataType) else DataType.FLOAT)
    return out


def _frames_mixed(
    device: str | None, names: list[str], values: dict[str, list[Any]], ts_ns: npt.NDArray[np.int64]
) -> Columns:
    """A frame with text signals: one column per signal (a loop over signals, not points)."""
    idx, ts, vals, texts, kinds = [], [], [], [], []
    for i, name in enumerate(names):
        field = f"values.{name}"
        try:
            col = pa.array(values[name])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise BadInput(f"signal {name!r} mixes kinds of values: {exc}", field) from None
        keep = np.asarray(col.is_valid())
        if pa.types.is_string(col.type):
            vals.append(np.full(int(keep.sum()), np.nan))
            texts.append(col.filter(pa.array(keep)))
            kinds.append(DataType.STRING)
        elif (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)
            or pa.types.is_null(col.type)
        ):
            v = np.asarray(col.filter(pa.array(keep)).cast(pa.float64()), dtype=np.float64)
            _check_finite(v, field)
            vals.append(v)
            texts.append(pa.nulls(len(v), pa.string()))
            kinds.append(
                DataType.INT if pa.types.is_integer(col.type)
                else DataType.BOOL if pa.types.is_boolean(col.type)
                else DataType.FLOAT
            )  # fmt: skip
        else:
            raise BadInput(f"values must be numbers, booleans or strings, not {col.type}", field)
        idx.append(np.full(int(keep.sum()), i, np.int32))
        ts.append(ts_ns[keep])
    signal = pa.DictionaryArray.from_arrays(
        pa.array(np.concatenate(idx)), pa.array(names, pa.string())
    )
    text = pa.concat_arrays(texts)
    return Columns(
        device,
        signal,
        np.concatenate(ts),
        np.concatenate(vals),
        text if text.null_count < len(text) else None,
        None,
        lambda: kinds,
    )


def _device(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw or "/" in raw:
        raise BadInput("must be a non-empty device name without '/'", "device")
    return raw


def _length(raw: Any, field: str, max_points: int) -> int:
    if not isinstance(raw, list):
        raise BadInput(f"must be an array, not {type(raw).__name__}", field)
    if len(raw) > max_points:
        raise PayloadTooLarge(f"{len(raw)} points, at most {max_points} per batch", field)
    return len(raw)


def _rows(raw: Any, device: str | None, unit: str, max_points: int) -> Columns:
    _length(raw, "points", max_points)
    if not raw:
        raise BadInput("no points in the batch", "points")
    try:
        table = pa.array(raw)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _rows_slow(raw, device, unit)
    if not pa.types.is_struct(table.type):
        raise BadInput("each point must be an object with signal, ts and value", "points")
    names = {table.type.field(i).name for i in range(table.type.num_fields)}
    unknown = names - ROW_FIELDS
    if unknown:
        raise BadInput(f"unknown field(s) {sorted(unknown)}; use {sorted(ROW_FIELDS)}", "points")
    for need in ("signal", "ts", "value"):
        if need not in names:
            raise BadInput(f"every point needs '{need}'", f"points.{need}")
    qual = table.field("quality") if "quality" in names else None
    return _columns(
        device,
        table.field("signal"),
        table.field("ts"),
        table.field("value"),
        qual,
        unit,
        "points.",
    )


def _rows_slow(raw: list[Any], device: str | None, unit: str) -> Columns:
    """Rows whose fields mix types (typically text and numbers): split by key, then as columns."""
    if not all(isinstance(r, dict) for r in raw):
        raise BadInput("each point must be an object with signal, ts and value", "points")
    cols = {k: [r.get(k) for r in raw] for k in ("signal", "ts", "value", "quality")}
    extra = set().union(*(r.keys() for r in raw)) - ROW_FIELDS
    if extra:
        raise BadInput(f"unknown field(s) {sorted(extra)}; use {sorted(ROW_FIELDS)}", "points")
    has_q = any(v is not None for v in cols["quality"])
    return _columns(
        device,
        cols["signal"],
        cols["ts"],
        cols["value"],
        cols["quality"] if has_q else None,
        unit,
        "points.",
    )


def _as_array(raw: Any, field: str, hint: pa.DataType | None = None) -> pa.Array:
    """A column from a list: the typed conversion first (fast), inference if it does not fit."""
    if isinstance(raw, pa.ChunkedArray):
        return raw.combine_chunks()
    if isinstance(raw, pa.Array):
        return raw
    if hint is not None:
        try:
            return pa.array(raw, hint)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            pass
    try:
        return pa.array(raw)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise BadInput(f"mixed or unsupported types: {exc}", field) from None


def _columns(
    device: str | None,
    signal: Any,
    ts: Any,
    value: Any,
    quality: Any,
    unit: str,
    prefix: str = "",
) -> Columns:
    sig = _as_array(signal, prefix + "signal", pa.string())
    if not (
        pa.types.is_string(sig.type)
        or pa.types.is_large_string(sig.type)
        or pa.types.is_dictionary(sig.type)
    ):
        raise BadInput(f"signal names must be strings, got {sig.type}", prefix + "signal")
    if sig.null_count:
        raise BadInput(f"signal name missing at index {_first_null(sig)}", prefix + "signal")
    enc = sig if pa.types.is_dictionary(sig.type) else pc.dictionary_encode(sig)
    ts_ns = parse_ts_column(_as_array(ts, prefix + "ts", pa.int64()), unit, prefix + "ts")
    check_range(ts_ns, prefix + "ts")
    qual = _quality(quality, prefix + "quality") if quality is not None else None
    # A point whose read failed has no value: null is accepted only with a bad quality.
    missing_ok = None if qual is None else (qual >> np.uint32(30)) >= 2
    vals, text, kinds_of_point = _values(value, prefix + "value", missing_ok)

    missing = None
    if missing_ok is not None and missing_ok.any():
        no_text = np.ones(len(vals), bool) if text is None else np.asarray(text.is_null())
        missing = np.isnan(vals) & no_text
        if not missing.any():
            missing = None

    def infer() -> list[DataType]:
        point_kinds = kinds_of_point() if callable(kinds_of_point) else kinds_of_point
        kinds = _kinds_per_signal(enc, point_kinds)
        if missing is not None:  # a signal seen only in failed reads: nothing says its kind
            absent = ~cols.present_per_signal()
            kinds = [DataType.FLOAT if a else k for k, a in zip(kinds, absent, strict=True)]
        return kinds

    cols = Columns(device, enc, ts_ns, vals, text, qual, infer, missing=missing)
    return cols


def _first_null(a: pa.Array) -> int:
    return int(np.flatnonzero(np.asarray(a.is_null()))[0])


_KIND_CODE: Final = {DataType.FLOAT: 0, DataType.INT: 1, DataType.BOOL: 2, DataType.STRING: 3}


PointKinds = npt.NDArray[np.int8] | DataType


def _values(
    raw: Any, field: str, missing_ok: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.float64], pa.Array | None, PointKinds | Callable[[], PointKinds]]:
    """Numeric values as float64; text values aside. Returns the kind of every point.

    ``missing_ok`` marks the points (bad quality) that may come without a value (null): they
    get NaN and no text.
    """
    if isinstance(raw, list):
        try:  # the common case, all numbers: a typed conversion, kinds worked out if needed
            arr = pa.array(raw, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            pass
        else:
            if not arr.null_count:
                vals = np.asarray(arr, dtype=np.float64)
                _check_finite(vals, field)
                return vals, None, lambda: _numeric_kind(raw)
    try:
        arr = _as_array(raw, field)
    except BadInput:
        if not isinstance(raw, list):
            raise
        return _mixed_values(raw, field, missing_ok)
    missing = None
    if arr.null_count:
        missing = np.asarray(arr.is_null())
        if missing_ok is None or (missing & ~missing_ok).any():
            allowed = missing_ok if missing_ok is not None else np.zeros(len(arr), bool)
            first = int(np.flatnonzero(missing & ~allowed)[0])
            raise BadInput(
                f"value missing (null) at index {first}; only a point with bad quality may "
                "come without a value",
                field,
            )
        if pa.types.is_null(arr.type):  # every point is a failed read
            return np.full(len(arr), np.nan), None, DataType.FLOAT
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.full(len(arr), np.nan), arr.cast(pa.string()), DataType.STRING
    if missing is not None:
        arr = arr.fill_null(False if pa.types.is_boolean(t) else 0)
    if pa.types.is_boolean(t):
        kind = DataType.BOOL
    elif pa.types.is_integer(t):
        kind = DataType.INT
    elif pa.types.is_floating(t):
        kind = DataType.FLOAT
    elif pa.types.is_null(t):
        raise BadInput("value missing (null) at index 0", field)
    else:
        raise BadInput(f"values must be numbers, booleans or strings, not {t}", field)
    # Through numpy, not a safe Arrow cast: integers beyond 2**53 round as documented.
    vals = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    if missing is not None:
        vals = np.where(missing, np.nan, vals)
        _check_finite(vals[~missing], field)
    else:
        _check_finite(vals, field)
    return vals, None, kind


def _check_finite(vals: npt.NDArray[np.float64], field: str) -> None:
    bad = ~np.isfinite(vals)
    if bad.any():
        raise BadInput(
            f"value at index {int(np.flatnonzero(bad)[0])} is not a finite number", field
        )


def _numeric_kind(raw: list[Any]) -> PointKinds:
    """int if every value was a JSON integer, bool if every one a boolean; else per point.

    Runs only when a batch brings signals the registry does not know yet.
    """
    try:
        t = pa.array(raw).type  # inference: int64, bool or double
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        t = None  # booleans mixed with numbers
    if t is not None and pa.types.is_integer(t):
        return DataType.INT
    if t is not None and pa.types.is_boolean(t):
        return DataType.BOOL
    codes = {bool: _KIND_CODE[DataType.BOOL], int: _KIND_CODE[DataType.INT]}
    float_code = _KIND_CODE[DataType.FLOAT]
    return np.fromiter((codes.get(type(v), float_code) for v in raw), np.int8, len(raw))


def _mixed_values(
    raw: list[Any], field: str, missing_ok: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.float64], pa.Array, npt.NDArray[np.int8]]:
    kinds = np.empty(len(raw), np.int8)
    vals = np.full(len(raw), np.nan)
    texts: list[str | None] = [None] * len(raw)
    for i, v in enumerate(raw):  # slow path: one batch mixing text and numbers
        if isinstance(v, str):
            kinds[i] = _KIND_CODE[DataType.STRING]
            texts[i] = v
        elif isinstance(v, bool):
            kinds[i], vals[i] = _KIND_CODE[DataType.BOOL], float(v)
        elif isinstance(v, int | float):
            kinds[i] = _KIND_CODE[DataType.INT if isinstance(v, int) else DataType.FLOAT]
            vals[i] = float(v)
            if not np.isfinite(vals[i]):
                raise BadInput(f"value at index {i} is not a finite number", field)
        elif v is None:
            if missing_ok is None or not missing_ok[i]:
                raise BadInput(
                    f"value missing (null) at index {i}; only a point with bad quality may "
                    "come without a value",
                    field,
                )
            kinds[i] = _KIND_CODE[DataType.FLOAT]
        else:
            raise BadInput(
                f"value at index {i} is a {type(v).__name__}; use a number, boolean or string",
                field,
            )
    return vals, pa.array(texts, pa.string()), kinds


def _kinds_per_signal(
    enc: pa.DictionaryArray, kinds: npt.NDArray[np.int8] | DataType
) -> list[DataType]:
    n_dict = len(enc.dictionary)
    if isinstance(kinds, DataType):
        return [kinds] * n_dict
    idx = np.asarray(enc.indices, dtype=np.int64)
    # A signal seen with both ints and floats is a float; text wins over everything (it must).
    rank = np.array([2, 1, 0, 3])[kinds]  # by _KIND_CODE: float, int, bool, string
    best = np.full(n_dict, -1)
    np.maximum.at(best, idx, rank)
    back = {2: DataType.FLOAT, 1: DataType.INT, 0: DataType.BOOL, 3: DataType.STRING}
    return [back[int(r)] for r in best]


def _quality(raw: Any, field: str) -> npt.NDArray[np.uint32]:
    arr = _as_array(raw, field)
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), np.uint32)
    if arr.null_count:  # a point that gives no quality is good, as in OPC UA
        if not (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)):
            raise BadInput(
                f"quality must be 'good'/'uncertain'/'bad' or an integer code, not {arr.type}",
                field,
            )
        arr = arr.fill_null(0 if pa.types.is_integer(arr.type) else "good")
    if pa.types.is_integer(arr.type):
        ints = np.asarray(arr.to_numpy(zero_copy_only=False))  # uint64 too, no overflowing cast
        if len(ints) and (ints.min() < 0 or ints.max() > 0xFFFFFFFF):
            raise BadInput("quality codes are OPC UA status codes (0 .. 2**32-1)", field)
        return ints.astype(np.uint32)
    if pa.types.is_string(arr.type):
        enc = pc.utf8_lower(arr).dictionary_encode()
        names = enc.dictionary.to_pylist()
        unknown = [n for n in names if n not in q.NAMES]
        if unknown:
            raise BadInput(
                f"unknown quality {unknown[0]!r}; use good, uncertain, bad or a code", field
            )
        codes = np.array([q.NAMES[n] for n in names], dtype=np.uint32)
        out: npt.NDArray[np.uint32] = codes[np.asarray(enc.indices)]
        return out
    raise BadInput(
        f"quality must be 'good'/'uncertain'/'bad' or an integer code, not {arr.type}", field
    )


def decode_arrow(body: bytes, device: str | None, max_points: int) -> Columns:
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise Malformed(f"not an Arrow IPC stream: {exc}", "body") from None
    if table.num_rows > max_points:
        raise PayloadTooLarge(f"{table.num_rows} points, at most {max_points} per batch", "body")
    names = set(table.column_names)
    for need in ("signal", "ts", "value"):
        if need not in names:
            raise BadInput(f"the Arrow stream needs a '{need}' column", need)
    meta = table.schema.metadata or {}
    try:
        device = device or (meta[b"device"].decode() if b"device" in meta else None)
        unit = meta.get(b"ts_unit", b"ms").decode()
    except UnicodeDecodeError:
        raise BadInput("schema metadata 'device' and 'ts_unit' must be UTF-8", "body") from None
    return _columns(
        _device(device),
        table.column("signal"),
        table.column("ts"),
        table.column("value"),
        table.column("quality") if "quality" in names else None,
        unit,
    )
