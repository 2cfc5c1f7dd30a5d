"""The frame form's fast timestamp path (ingest/decode.py ``_plain_int_ts``) decodes exactly as
the general path, and leaves every other input, good or bad, to it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from shopfloor.core.errors import BadInput
from shopfloor.core.types import MIN_TS_NS
from shopfloor.ingest import decode

NOW_MS = int(time.time() * 1000)


def _frame(ts: object, unit: str = "ms") -> dict[str, object]:
    n = len(ts) if isinstance(ts, list) else 1
    return {"ts": ts, "ts_unit": unit, "values": {"a": [1.5] * n, "b": [2] * n}}


def _general(monkeypatch: pytest.MonkeyPatch, doc: dict[str, object]) -> decode.Columns:
    with monkeypatch.context() as m:
        m.setattr(decode, "_plain_int_ts", lambda raw, unit: None)
        return decode.decode_doc(doc, 10_000)


@pytest.mark.parametrize(
    ("ts", "unit"),
    [
        ([NOW_MS - 2000, NOW_MS - 1000, NOW_MS], "ms"),
        ([NOW_MS // 1000 - 5, NOW_MS // 1000], "s"),
        ([(NOW_MS - 1) * 1000], "us"),
        ([NOW_MS * 1_000_000], "ns"),
        ([MIN_TS_NS // 1_000_000], "ms"),  # the first instant accepted
    ],
)
def test_the_fast_path_decodes_as_the_general_one(
    monkeypatch: pytest.MonkeyPatch, ts: list[int], unit: str
) -> None:
    assert decode._plain_int_ts(ts, unit) is not None  # it is the fast path that runs
    fast = decode.decode_doc(_frame(ts, unit), 10_000)
    slow = _general(monkeypatch, _frame(ts, unit))
    np.testing.assert_array_equal(fast.ts, slow.ts)
    np.testing.assert_array_equal(fast.value, slow.value)
    assert fast.signal_names() == slow.signal_names()


@pytest.mark.parametrize(
    "ts",
    [
        [NOW_MS, 1.5],  # a float: the general path rounds floats
        [True, NOW_MS],  # a boolean is no timestamp
        ["2026-12-02T06:00:00Z"],
        [MIN_TS_NS // 1_000_000 - 1],  # before 1990
        [NOW_MS + 2 * 86_400_000],  # two days ahead
        list(range(NOW_MS - 100, NOW_MS)),  # longer than a frame usually is
    ],
)
def test_anything_else_goes_the_general_way(monkeypatch: pytest.MonkeyPatch, ts: list) -> None:
    assert decode._plain_int_ts(ts, "ms") is None

    def outcome(doc_of: object) -> object:
        try:
            return doc_of().ts.tolist()  # type: ignore[operator]
        except BadInput as exc:
            return ("refused", str(exc), exc.field)

    slow = outcome(lambda: _general(monkeypatch, _frame(ts)))
    assert outcome(lambda: decode.decode_doc(_frame(ts), 10_000)) == slow


def test_an_unknown_unit_is_named_by_the_general_path() -> None:
    assert decode._plain_int_ts([NOW_MS], "minutes") is None
    with pytest.raises(BadInput, match="unknown unit"):
        decode.decode_doc(_frame([NOW_MS], "minutes"), 10_000)
