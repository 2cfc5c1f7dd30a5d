"""The S7 connector against a live snap7 server: decoding, coalescing, faults, writes."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connector import connector_class
from shopfloor.edge.connectors.s7.codec import ReadPlan
from shopfloor.edge.connectors.s7.config import S7Config, S7Point
from shopfloor.edge.connectors.s7.connector import S7Connector
from shopfloor.edge.model import Reading, WriteRequest

from .conftest import Plc

TYPED_POINTS: list[dict[str, Any]] = [
    {"name": "flag", "area": "DB", "db": 1, "byte": 0, "bit": 5, "type": "bool"},
    {"name": "flag_off", "area": "DB", "db": 1, "byte": 0, "bit": 4, "type": "bool"},
    {"name": "b", "area": "DB", "db": 1, "byte": 1, "type": "byte"},
    {"name": "i", "area": "DB", "db": 1, "byte": 2, "type": "int"},
    {"name": "di", "area": "DB", "db": 1, "byte": 4, "type": "dint"},
    {"name": "w", "area": "DB", "db": 1, "byte": 8, "type": "word"},
    {"name": "dw", "area": "DB", "db": 1, "byte": 10, "type": "dword"},
    {"name": "r", "area": "DB", "db": 1, "byte": 14, "type": "real"},
    {"name": "lr", "area": "DB", "db": 1, "byte": 18, "type": "lreal"},
    {"name": "s", "area": "DB", "db": 1, "byte": 26, "type": "string", "length": 10},
    {"name": "scaled", "area": "DB", "db": 1, "byte": 300, "type": "int", "scale": 0.1,
     "offset": -40},
    {"name": "other_db", "area": "DB", "db": 2, "byte": 6, "type": "dint"},
    {"name": "marker", "area": "M", "byte": 3, "type": "word"},
    {"name": "m_bit", "area": "M", "byte": 5, "bit": 0, "type": "bool"},
    {"name": "input", "area": "I", "byte": 2, "type": "int"},
    {"name": "output", "area": "Q", "byte": 1, "bit": 7, "type": "bool"},
]  # fmt: skip


def fill(plc: Plc) -> None:
    db1, db2, m, i, q = (plc.areas[k] for k in ("DB1", "DB2", "M", "I", "Q"))
    db1[0] = 0b0010_0000
    struct.pack_into(">BhiHIfd", db1, 1, 200, -12345, -2_000_000_000, 65000, 4_000_000_000,
                     3.25, -1.0e300)  # fmt: skip
    db1[26:26 + 2 + 5] = bytes([10, 5]) + b"hello"  # fmt: skip
    struct.pack_into(">h", db1, 300, 655)  # 655 * 0.1 - 40 = 25.5
    struct.pack_into(">i", db2, 6, 42)
    struct.pack_into(">H", m, 3, 0xBEEF)
    m[5] = 0b0000_0001
    struct.pack_into(">h", i, 2, -7)
    q[1] = 0b1000_0000


EXPECTED = {
    "flag": 1.0, "flag_off": 0.0, "b": 200.0, "i": -12345.0, "di": -2_000_000_000.0,
    "w": 65000.0, "dw": 4_000_000_000.0, "r": 3.25, "lr": -1.0e300, "scaled": 25.5,
    "other_db": 42.0, "marker": float(0xBEEF), "m_bit": 1.0, "input": -7.0, "output": 1.0,
}  # fmt: skip


def config(plc: Plc, points: list[dict[str, Any]], **extra: Any) -> S7Config:
    device = {"name": "plc1", "period_s": 0.05, "timeout_s": 1.0, "points": points}
    return S7Config.model_validate(
        {"host": "127.0.0.1", "port": plc.port, "devices": [device], **extra}
    )


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


def test_entry_point_resolves_to_the_connector() -> None:
    assert connector_class("s7") is S7Connector


def test_every_type_is_decoded_big_endian_and_scaled(plc: Plc) -> None:
    fill(plc)
    readings: list[Reading] = []

    async def sink(r: Reading) -> None:
        readings.append(r)

    async def main() -> None:
        conn = S7Connector("s7", config(plc, TYPED_POINTS), sink)
        try:
            reading = await conn.pollers["plc1"].poll_once()
        finally:
            await conn.link.aclose()
        got = dict(zip(reading.signals, reading.values.tolist(), strict=True))
        for name, want in EXPECTED.items():
            assert got[name] == want, name
        assert reading.text is not None
        assert reading.text[reading.signals.index("s")] == "hello"
        assert math.isnan(got["s"])
        assert (reading.quality == GOOD).all()
        assert conn.status()["devices"]["plc1"]["ranges_per_poll"] == 6

    run(main)


def test_points_are_coalesced_into_contiguous_ranges() -> None:
    points = [S7Point.model_validate(p) for p in TYPED_POINTS]
    plan = ReadPlan(points, max_gap=32)
    # DB1 0..36 is one range, DB1.300 is beyond the gap, then DB2, I, M (3 and 5 merge), Q.
    ranges = [(b.area, b.db, b.start, b.size) for b in plan.blocks]
    assert ranges == [
        ("DB", 1, 0, 38), ("DB", 1, 300, 2), ("DB", 2, 6, 4), ("I", 0, 2, 2),
        ("M", 0, 3, 3), ("Q", 0, 1, 1),
    ]  # fmt: skip
    assert plan.total_bytes == 50
    assert len(ReadPlan(points, max_gap=1024).blocks) == 5  # DB1 now one range


def test_large_range_and_many_ranges_read_right(plc: Plc) -> None:
    # One range longer than a PDU (480 bytes) and more ranges than one request may carry (20).
    db1 = plc.areas["DB1"]
    points: list[dict[str, Any]] = []
    for k in range(25):
        struct.pack_into(">i", db1, k * 40, k * 1000 - 7)
        points.append({"name": f"v{k}", "db": 1, "byte": k * 40, "type": "dint"})
    struct.pack_into(">f", db1, 1000, 9.5)
    points.append({"name": "far", "db": 1, "byte": 1000, "type": "real"})

    async def main() -> None:
        for gap in (0, 1024):
            conn = S7Connector("s7", config(plc, points, max_gap=gap), collect_none)
            try:
                reading = await conn.pollers["plc1"].poll_once()
            finally:
                await conn.link.aclose()
            assert len(conn.plans["plc1"].blocks) == (26 if gap == 0 else 1)
            want = [k * 1000 - 7 for k in range(25)] + [9.5]
            assert reading.values.tolist() == want
            assert (reading.quality == GOOD).all()

    run(main)


async def collect_none(reading: Reading) -> None:
    return None


def test_stopped_plc_gives_bad_quality_then_recovers(plc: Plc) -> None:
    fill(plc)
    queue: asyncio.Queue[Reading] = asyncio.Queue()

    async def main() -> None:
        cfg = config(plc, TYPED_POINTS[:4], backoff_max_s=0.4)
        conn = S7Connector("s7", cfg, queue.put)
        task = asyncio.create_task(conn.run())

        async def next_where(good: bool) -> Reading:
            while True:
                r = await asyncio.wait_for(queue.get(), 10)
                if bool((r.quality == GOOD).all()) == good:
                    return r

        try:
            first = await next_where(good=True)
            assert first.values.tolist() == [1.0, 0.0, 200.0, -12345.0]
            plc.stop()
            bad = await next_where(good=False)
            assert np.isnan(bad.values).all()
            assert (bad.quality == BAD).all()
            assert bad.signals == first.signals
            assert conn.status()["devices"]["plc1"]["consecutive_failures"] >= 1
            struct.pack_into(">h", plc.areas["DB1"], 2, 111)
            plc.start()
            back = await next_where(good=True)
            assert back.values.tolist() == [1.0, 0.0, 200.0, 111.0]
            status = conn.status()
            assert status["connected"] is True
            assert status["connects"] >= 2
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main)


def test_missing_db_gives_bad_quality_without_dropping_the_connection(plc: Plc) -> None:
    async def main() -> None:
        points = [{"name": "x", "db": 9, "byte": 0, "type": "int"}]
        conn = S7Connector("s7", config(plc, points), collect_none)
        try:
            reading = await conn.pollers["plc1"].poll_once()
            assert (reading.quality == BAD).all()
            assert "does not exist" in (conn.pollers["plc1"].stats.last_error or "")
            assert conn.link.connected  # the PLC answered; no reconnect is needed
        finally:
            await conn.link.aclose()

    run(main)


WRITABLE: list[dict[str, Any]] = [
    {"name": "speed", "db": 1, "byte": 40, "type": "int", "scale": 0.1, "writable": True},
    {"name": "enable", "db": 1, "byte": 42, "bit": 2, "type": "bool", "writable": True},
    {"name": "recipe", "db": 1, "byte": 44, "type": "string", "length": 8, "writable": True},
    {"name": "limit", "db": 1, "byte": 60, "type": "real", "writable": True},
    {"name": "counter", "db": 1, "byte": 64, "type": "dint"},
]


def test_write_encodes_the_type_and_reads_back(plc: Plc) -> None:
    db1 = plc.areas["DB1"]
    db1[42] = 0b1000_0001  # other bits of the byte must survive a bool write

    async def main() -> None:
        conn = S7Connector("s7", config(plc, WRITABLE), collect_none)

        async def write(signal: str, value: Any, **kw: Any) -> Any:
            return await conn.write(WriteRequest(f"w-{signal}", "plc1", signal, value, **kw))

        try:
            res = await write("speed", 12.3)
            assert res.ok, res.message
            assert struct.unpack_from(">h", db1, 40)[0] == 123
            assert res.read_back == pytest.approx(12.3)
            res = await write("enable", True)
            assert res.ok, res.message
            assert db1[42] == 0b1000_0101
            assert res.read_back == 1.0
            res = await write("enable", False)
            assert res.ok
            assert db1[42] == 0b1000_0001
            res = await write("recipe", "AB-7")
            assert res.ok
            assert res.read_back == "AB-7"
            assert bytes(db1[44:50]) == bytes([8, 4]) + b"AB-7"
            res = await write("limit", 0.1)
            assert res.ok, res.message  # compared after REAL rounding, not against 0.1 exactly
            assert struct.unpack_from(">f", db1, 60)[0] == pytest.approx(0.1)

            before = bytes(db1)
            refused = [
                await write("counter", 5),  # not writable
                await write("speed", 4000.0),  # raw 40000 is outside INT
                await write("recipe", "far too long"),
                await write("speed", "fast"),
                await write("nope", 1),
            ]
            assert [r.ok for r in refused] == [False] * 5
            assert "not writable" in refused[0].message
            assert "outside" in refused[1].message
            assert "STRING[8]" in refused[2].message
            assert "expected a number" in refused[3].message
            assert "no point 'nope'" in refused[4].message
            assert bytes(db1) == before  # nothing was sent for a refused write
        finally:
            await conn.link.aclose()

    run(main)


def test_write_to_a_stopped_plc_fails_cleanly(plc: Plc) -> None:
    async def main() -> None:
        conn = S7Connector("s7", config(plc, WRITABLE), collect_none)
        plc.stop()
        try:
            res = await conn.write(WriteRequest("w1", "plc1", "speed", 1.0, timeout_s=2.0))
            assert not res.ok
            assert "failed" in res.message
        finally:
            await conn.link.aclose()

    run(main)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"name": "a", "byte": 0, "type": "int"}, "needs a db number"),
        ({"name": "a", "area": "M", "db": 1, "byte": 0, "type": "int"}, "db is only for"),
        ({"name": "a", "db": 1, "byte": 0, "type": "bool"}, "bit is required"),
        ({"name": "a", "db": 1, "byte": 0, "type": "string"}, "length is required"),
        ({"name": "a", "db": 1, "byte": 0, "type": "int", "scal": 2}, "scal"),
        ({"name": "a", "db": 1, "byte": 0, "type": "bool", "bit": 1, "scale": 2}, "do not apply"),
    ],
)
def test_config_errors_name_what_is_wrong(point: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        S7Config.model_validate(
            {"host": "127.0.0.1", "devices": [{"name": "d", "points": [point]}]}
        )
