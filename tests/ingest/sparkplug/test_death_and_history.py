"""NDEATH / DDEATH make the latest values stale; historical metrics are backfill."""

from __future__ import annotations

from typing import Any

import pytest

from shopfloor.api.platform import Platform
from shopfloor.core.quality import BAD
from tests.edge.sparkplug.helpers import Uplinks, reading

from .helpers import HostHarness, Publisher, history, latest

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000
MS = 1_000_000


async def test_ndeath_of_the_current_birth_marks_node_and_devices_stale(
    harness: HostHarness, publisher: Publisher, platform: Platform, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    key = "plant1/ext1"
    nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 3), M(T0, "x", dt.DOUBLE, 1.0, alias=1)])
    db = spb.DBirth(T0, 1, [M(T0, "y", dt.STRING, "run", alias=2)])
    publisher.send("spBv1.0/plant1/NBIRTH/ext1", nb.encode(include_dtypes=True))
    publisher.send("spBv1.0/plant1/DBIRTH/ext1/d1", db.encode(include_dtypes=True))
    nd = spb.NData(T0 + 5, 2, [M(T0 + 5, None, dt.DOUBLE, 2.0, alias=1)])
    publisher.send("spBv1.0/plant1/NDATA/ext1", nd.encode())

    # The Will of an older session (bdSeq 2), delivered late: ignored.
    old = spb.NDeath(T0, M(None, "bdSeq", dt.UINT64, 2))
    publisher.send("spBv1.0/plant1/NDEATH/ext1", old.encode(include_dtypes=True))
    node = await harness.messages(key, 4)
    assert node["online"]
    assert node["errors"] == {"stale_ndeath": 1}
    assert latest(platform, "ext1/x") == ((T0 + 5) * MS, 2.0, None, 0)
    assert latest(platform, "ext1.d1/y") == (T0 * MS, None, "run", 0)

    # The NDEATH of this birth: node and device offline, every signal stale after its data.
    death = spb.NDeath(T0, M(None, "bdSeq", dt.UINT64, 3))
    publisher.send("spBv1.0/plant1/NDEATH/ext1", death.encode(include_dtypes=True))
    node = await harness.messages(key, 5)
    assert not node["online"]
    assert not node["devices"]["d1"]["online"]
    assert node["deaths"] == 1
    for sig in ("ext1/x", "ext1.d1/y"):
        ts, value, text, quality = latest(platform, sig)
        assert ts > (T0 + 5) * MS  # the host's time: the Will's own stamp is from connect time
        assert (value, text, quality) == (None, None, BAD)
    assert [v for _, v, _, _ in history(platform, "ext1/x")] == [1.0, 2.0, None]

    # Data after the death is data before a birth.
    nd = spb.NData(T0 + 6, 3, [M(T0 + 6, None, dt.DOUBLE, 3.0, alias=1)])
    publisher.send("spBv1.0/plant1/NDATA/ext1", nd.encode())
    node = await harness.messages(key, 6)
    assert node["errors"] == {"stale_ndeath": 1, "data_before_birth": 1}
    assert len(history(platform, "ext1/x")) == 3


async def test_ddeath_marks_one_device_stale(
    harness: HostHarness, publisher: Publisher, platform: Platform, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 0)])
    publisher.send("spBv1.0/plant1/NBIRTH/ext2", nb.encode(include_dtypes=True))
    for seq, dev in ((1, "a"), (2, "b")):
        db = spb.DBirth(T0, seq, [M(T0, "v", dt.INT16, seq, alias=1)])
        publisher.send(f"spBv1.0/plant1/DBIRTH/ext2/{dev}", db.encode(include_dtypes=True))
    publisher.send("spBv1.0/plant1/DDEATH/ext2/b", spb.DDeath(T0 + 1, 3).encode())
    node = await harness.messages("plant1/ext2", 4)
    assert node["errors"] == {}
    assert node["online"]
    assert node["devices"]["a"]["online"]
    assert not node["devices"]["b"]["online"]
    assert latest(platform, "ext2.a/v") == (T0 * MS, 1.0, None, 0)
    assert latest(platform, "ext2.b/v")[1:] == (None, None, BAD)


async def test_historical_metrics_are_backfill_and_leave_latest_alone(
    harness: HostHarness, uplinks: Uplinks, platform: Platform
) -> None:
    async with uplinks.run() as up:
        await harness.messages("plant1/gw1", 1)
        await up.send([reading("m1", ("a",), T0 + 1000, [5.0])], historical=False)
        await harness.messages("plant1/gw1", 3)
        # What the edge buffered while the uplink was down arrives later, flagged historical.
        backlog = [reading("m1", ("a",), T0, [1.0]), reading("m1", ("a",), T0 + 500, [2.0])]
        await up.send(backlog, historical=True)
        node = await harness.messages("plant1/gw1", 4)
        assert node["errors"] == {}
        assert history(platform, "gw1.m1/a") == [
            (T0 * MS, 1.0, None, 0),
            ((T0 + 500) * MS, 2.0, None, 0),
            ((T0 + 1000) * MS, 5.0, None, 0),
        ]
        assert latest(platform, "gw1.m1/a") == ((T0 + 1000) * MS, 5.0, None, 0)
