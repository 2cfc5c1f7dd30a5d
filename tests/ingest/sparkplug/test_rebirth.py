"""Seq gaps, unknown aliases, data before births: an NCMD rebirth request, then data resumes."""

from __future__ import annotations

from typing import Any

import pytest

from shopfloor.api.platform import Platform
from tests.edge.sparkplug.helpers import Recorder, Uplinks, reading

from .helpers import HostHarness, Publisher, history

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000
MS = 1_000_000


def rebirth_requests(spb: Any, recorder: Recorder, topic: str) -> list[Any]:
    out = []
    for m in recorder.messages:
        if m.topic == topic:
            cmd = spb.NCmd.decode(m.payload)
            out.append([(x.name, x.datatype, x.value) for x in cmd.metrics])
    return out


async def test_seq_gap_gets_a_rebirth_from_our_edge_node(
    harness: HostHarness, uplinks: Uplinks, platform: Platform, recorder: Recorder, spb: Any
) -> None:
    key = "plant1/gw1"
    async with uplinks.run() as up:
        await harness.messages(key, 1)
        await up.send([reading("m1", ("a",), T0, [1.0])], historical=False)
        await harness.messages(key, 3)
        up.node._seq = (up.node._seq + 1) % 256  # as if one message had been lost
        await up.send([reading("m1", ("a",), T0 + 1, [2.0])], historical=False)
        node = await harness.messages(key, 4)
        assert node["errors"] == {"seq_gap": 1}
        assert node["rebirths_requested"] == 1

        # The edge node answers the NCMD with NBIRTH (seq 0) and its DBIRTHs.
        await harness.until(lambda: harness.node(key)["births"] == 2, "the rebirth")
        await harness.messages(key, 6)
        assert up.status()["births_sent"] == 2
        await up.send([reading("m1", ("a",), T0 + 2, [3.0])], historical=False)
        node = await harness.messages(key, 7)

    assert node["errors"] == {"seq_gap": 1}, node["last_error"]
    assert node["seq"] == 2
    assert node["rebirths_requested"] == 1
    await recorder.count("NCMD", 1)
    assert rebirth_requests(spb, recorder, "spBv1.0/plant1/NCMD/gw1") == [
        [("Node Control/Rebirth", spb.DataType.BOOLEAN, True)]
    ]
    # Sparkplug: NCMD at QoS 0, never retained.
    assert [(t, q, r) for t, _, q, r in harness.published if "NCMD" in t] == [
        ("spBv1.0/plant1/NCMD/gw1", 0, False)
    ]
    # The message after the gap was decodable (aliases known), so nothing is lost.
    pts = history(platform, "gw1.m1/a")
    assert [(t, v) for t, v, _, _ in pts[:3]] == [
        (T0 * MS, 1.0),
        ((T0 + 1) * MS, 2.0),
        ((T0 + 2) * MS, 3.0),
    ]


async def test_unknown_alias_drops_the_message_and_requests_one_rebirth(
    harness: HostHarness, publisher: Publisher, platform: Platform, recorder: Recorder, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    key = "plant1/ext1"

    def births() -> None:
        nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 0)])
        db = spb.DBirth(T0, 1, [M(T0, "a", dt.DOUBLE, 1.0, alias=1)])
        publisher.send("spBv1.0/plant1/NBIRTH/ext1", nb.encode(include_dtypes=True))
        publisher.send("spBv1.0/plant1/DBIRTH/ext1/d", db.encode(include_dtypes=True))

    births()
    bad = spb.DData(
        T0 + 1,
        2,
        [M(T0 + 1, None, dt.DOUBLE, 5.0, alias=1), M(T0 + 1, None, dt.DOUBLE, 6.0, alias=99)],
    )
    publisher.send("spBv1.0/plant1/DDATA/ext1/d", bad.encode())
    again = spb.DData(T0 + 2, 3, [M(T0 + 2, None, dt.DOUBLE, 7.0, alias=99)])
    publisher.send("spBv1.0/plant1/DDATA/ext1/d", again.encode())
    node = await harness.messages(key, 4)
    assert node["errors"] == {"unknown_metric": 2}
    assert "alias 99" in node["last_error"]
    # Rate-limited: the second offence inside the interval sends no second request.
    assert node["rebirths_requested"] == 1
    await recorder.count("NCMD", 1)
    assert rebirth_requests(spb, recorder, "spBv1.0/plant1/NCMD/ext1") == [
        [("Node Control/Rebirth", spb.DataType.BOOLEAN, True)]
    ]
    # Nothing of the undecodable messages was stored, not even the known alias 1.
    assert [v for _, v, _, _ in history(platform, "ext1.d/a")] == [1.0]

    # The publisher rebirths, now with alias 99 known; data resumes.
    nb = spb.NBirth(T0 + 3, 0, [M(T0 + 3, "bdSeq", dt.UINT64, 0)])
    db = spb.DBirth(
        T0 + 3,
        1,
        [M(T0 + 3, "a", dt.DOUBLE, 1.5, alias=1), M(T0 + 3, "b", dt.DOUBLE, 0.0, alias=99)],
    )
    publisher.send("spBv1.0/plant1/NBIRTH/ext1", nb.encode(include_dtypes=True))
    publisher.send("spBv1.0/plant1/DBIRTH/ext1/d", db.encode(include_dtypes=True))
    publisher.send(
        "spBv1.0/plant1/DDATA/ext1/d",
        spb.DData(T0 + 4, 2, [M(T0 + 4, None, dt.DOUBLE, 8.0, alias=99)]).encode(),
    )
    node = await harness.messages(key, 7)
    assert node["errors"] == {"unknown_metric": 2}
    assert history(platform, "ext1.d/b") == [
        ((T0 + 3) * MS, 0.0, None, 0),
        ((T0 + 4) * MS, 8.0, None, 0),
    ]


async def test_data_before_birth_and_device_birth_without_node_birth(
    harness: HostHarness, publisher: Publisher, platform: Platform, recorder: Recorder, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    # A host that starts after the node's births sees data first: dropped, rebirth requested.
    publisher.send(
        "spBv1.0/plant1/NDATA/late1",
        spb.NData(T0, 5, [M(T0, None, dt.DOUBLE, 1.0, alias=1)]).encode(),
    )
    node = await harness.messages("plant1/late1", 1)
    assert node["errors"] == {"data_before_birth": 1}
    assert node["rebirths_requested"] == 1

    # A DBIRTH without NBIRTH is taken (names, aliases, values) and a rebirth requested.
    db = spb.DBirth(T0, 7, [M(T0, "x", dt.INT32, -3, alias=4)])
    publisher.send("spBv1.0/plant1/DBIRTH/late2/dev", db.encode(include_dtypes=True))
    publisher.send(
        "spBv1.0/plant1/DDATA/late2/dev",
        spb.DData(T0 + 1, 8, [M(T0 + 1, None, dt.INT32, 4, alias=4)]).encode(),
    )
    node = await harness.messages("plant1/late2", 2)
    assert node["errors"] == {"dbirth_without_nbirth": 1}
    assert node["rebirths_requested"] == 1
    assert node["devices"]["dev"]["online"]
    assert not node["born"]
    assert [(t, v) for t, v, _, _ in history(platform, "late2.dev/x")] == [
        (T0 * MS, -3.0),
        ((T0 + 1) * MS, 4.0),
    ]
    await recorder.until(lambda ms: sum(m.kind == "NCMD" for m in ms) >= 2, what="2 NCMD")
    assert sorted(m.topic for m in recorder.of("NCMD")) == [
        "spBv1.0/plant1/NCMD/late1",
        "spBv1.0/plant1/NCMD/late2",
    ]
