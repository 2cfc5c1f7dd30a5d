"""Births register devices, signals and the hierarchy; data lands in the historian exactly.

Two publishers: our edge node (SparkplugUplink) and payloads encoded by pysparkplug, an
independent implementation, published with paho.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from shopfloor.api.platform import Platform
from shopfloor.core.quality import BAD, UNCERTAIN
from shopfloor.core.types import DataType
from tests.edge.sparkplug.helpers import Uplinks, reading

from .helpers import HostHarness, Publisher, history

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000  # ms
MS = 1_000_000


def signal_types(platform: Platform, device: str) -> dict[str, DataType]:
    tid = platform.registry.get_tenant("plant1").id
    return {s.name: s.data_type for s in platform.registry.list_signals(tid, device)}


def asset_path(platform: Platform, device: str) -> list[tuple[str, str]]:
    """(level, name) from the device's asset up to the enterprise."""
    tid = platform.registry.get_tenant("plant1").id
    assets = {a.id: a for a in platform.registry.list_assets(tid)}
    at = platform.registry.get_device(tid, device).asset_id
    path = []
    while at is not None:
        path.append((str(assets[at].level), assets[at].name))
        at = assets[at].parent_id
    return path


async def test_uplink_births_register_hierarchy_and_data_is_exact(
    harness: HostHarness, uplinks: Uplinks, platform: Platform
) -> None:
    async with uplinks.run(datatypes={"press1/count": "Int64"}) as up:
        await harness.messages("plant1/gw1", 1)
        r = reading(
            "press1",
            ("temp", "count", "mode", "broken"),
            T0 + 5,
            [21.25, 42.0, math.nan, math.nan],
            quality=[0, UNCERTAIN | 0x1234, 0, BAD | 0x310000],
            text=(None, None, "auto", None),
        )
        await up.send([r], historical=False)
        node = await harness.messages("plant1/gw1", 3)  # NBIRTH, DBIRTH, DDATA

        assert node["online"]
        assert node["bdSeq"] == 0
        assert node["seq"] == 2
        assert node["errors"] == {}, node["last_error"]
        assert node["devices"]["press1"]["online"]
        assert node["devices"]["press1"]["signals"] == 4
        # bdSeq and Node Control/Rebirth are session bookkeeping, not signals.
        assert signal_types(platform, "gw1") == {}
        assert signal_types(platform, "gw1.press1") == {
            "temp": DataType.FLOAT,
            "count": DataType.INT,
            "mode": DataType.STRING,
            "broken": DataType.FLOAT,
        }
        assert asset_path(platform, "gw1") == [
            ("area", "gw1"),
            ("site", "plant1"),
            ("enterprise", "plant1"),
        ]
        assert asset_path(platform, "gw1.press1") == [
            ("machine", "press1"),
            ("line", "gw1"),
            ("area", "gw1"),
            ("site", "plant1"),
            ("enterprise", "plant1"),
        ]
        ts = (T0 + 5) * MS
        assert history(platform, "gw1.press1/temp") == [(ts, 21.25, None, 0)]
        assert history(platform, "gw1.press1/count") == [(ts, 42.0, None, UNCERTAIN | 0x1234)]
        assert history(platform, "gw1.press1/mode") == [(ts, None, "auto", 0)]
        # A failed read travels as is_null with its status code: stored without a value, bad.
        assert history(platform, "gw1.press1/broken") == [(ts, None, None, BAD | 0x310000)]

    # stop() publishes the NDEATH of the session: every signal reads stale (bad, no value).
    node = await harness.messages("plant1/gw1", 4)
    assert not node["online"]
    assert not node["devices"]["press1"]["online"]
    for sig in ("temp", "count", "mode", "broken"):
        points = history(platform, f"gw1.press1/{sig}")
        assert len(points) == 2
        assert points[1][0] > ts
        assert points[1][1:] == (None, None, BAD)


def _with_quality(spb: Any, raw: bytes, alias: int, code: int) -> bytes:
    """Add a Quality property (UInt32) to one metric, with pysparkplug's own protobuf module."""
    pl = spb._protobuf.Payload.FromString(raw)
    for m in pl.metrics:
        if m.alias == alias:
            m.properties.keys.append("Quality")
            m.properties.values.add(type=7, int_value=code)
    return bytes(pl.SerializeToString())


async def test_independent_publisher_types_timestamps_and_quality(
    harness: HostHarness, publisher: Publisher, platform: Platform, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    nbirth = spb.NBirth(
        T0,
        0,
        [
            M(T0, "bdSeq", dt.UINT64, 3),
            M(T0, "Node Control/Rebirth", dt.BOOLEAN, False),
            M(None, "Inputs/Level", dt.INT8, -5, alias=1),
            M(None, "Counter", dt.UINT32, 4_000_000_000, alias=2),
            M(None, "Ratio", dt.FLOAT, 0.5, alias=3),
            M(None, "Running", dt.BOOLEAN, True, alias=4),
            M(None, "Note", dt.TEXT, "hello", alias=5),
            M(None, "Blob", dt.BYTES, b"\x00\x01", alias=6),
        ],
    )
    dbirth = spb.DBirth(
        T0 + 1,
        1,
        [
            M(T0 + 1, "speed", dt.INT64, -7, alias=10),
            M(T0 + 1, "temp", dt.DOUBLE, 1.5, alias=11),
            M(T0 + 1, "state", dt.STRING, "ok", alias=12),
        ],
    )
    ddata = spb.DData(
        T0 + 20,
        2,
        [
            M(T0 + 10, None, dt.INT64, 9, alias=10),
            M(None, None, dt.DOUBLE, 2.5, alias=11),  # no timestamp: the payload's
            M(T0 + 20, None, dt.STRING, None, alias=12, is_null=True),
        ],
    )
    ndata = spb.NData(
        T0 + 30,
        3,
        [
            M(T0 + 30, None, dt.INT8, -128, alias=1),
            M(T0 + 30, None, dt.BOOLEAN, False, alias=4),
            M(T0 + 30, None, dt.UINT32, 7, alias=2),
            M(T0 + 30, None, dt.BYTES, b"\x02", alias=6),  # known, not stored, no rebirth
        ],
    )
    publisher.send("spBv1.0/plant1/NBIRTH/ext1", nbirth.encode(include_dtypes=True))
    publisher.send("spBv1.0/plant1/DBIRTH/ext1/pump", dbirth.encode(include_dtypes=True))
    publisher.send("spBv1.0/plant1/DDATA/ext1/pump", ddata.encode())
    publisher.send("spBv1.0/plant1/NDATA/ext1", _with_quality(spb, ndata.encode(), 2, UNCERTAIN))
    node = await harness.messages("plant1/ext1", 4)

    assert node["bdSeq"] == 3
    assert node["seq"] == 3
    assert node["rebirths_requested"] == 0
    assert node["errors"] == {"unsupported_metric": 1}
    assert "Blob" in node["last_error"]
    assert "Bytes" in node["last_error"]
    assert signal_types(platform, "ext1") == {
        "Inputs.Level": DataType.INT,  # '/' is not allowed in registry names
        "Counter": DataType.INT,
        "Ratio": DataType.FLOAT,
        "Running": DataType.BOOL,
        "Note": DataType.STRING,
    }
    assert signal_types(platform, "ext1.pump") == {
        "speed": DataType.INT,
        "temp": DataType.FLOAT,
        "state": DataType.STRING,
    }
    t = [(T0 + i) * MS for i in range(31)]
    assert history(platform, "ext1/Inputs.Level") == [
        (t[0], -5.0, None, 0),
        (t[30], -128.0, None, 0),
    ]
    assert history(platform, "ext1/Counter") == [
        (t[0], 4_000_000_000.0, None, 0),
        (t[30], 7.0, None, UNCERTAIN),
    ]
    assert history(platform, "ext1/Ratio") == [(t[0], 0.5, None, 0)]
    assert history(platform, "ext1/Running") == [(t[0], 1.0, None, 0), (t[30], 0.0, None, 0)]
    assert history(platform, "ext1/Note") == [(t[0], None, "hello", 0)]
    assert history(platform, "ext1.pump/speed") == [(t[1], -7.0, None, 0), (t[10], 9.0, None, 0)]
    assert history(platform, "ext1.pump/temp") == [(t[1], 1.5, None, 0), (t[20], 2.5, None, 0)]
    assert history(platform, "ext1.pump/state") == [(t[1], None, "ok", 0), (t[20], None, None, BAD)]
    assert asset_path(platform, "ext1.pump")[:2] == [("machine", "pump"), ("line", "ext1")]
