"""NBIRTH / DBIRTH / DDATA on a real Mosquitto, decoded by pysparkplug."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from shopfloor.core.quality import BAD, UNCERTAIN

from .helpers import Recorder, Uplinks, reading, until_true

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000  # ms


def names_by_alias(birth: Any) -> dict[int, str]:
    return {m.alias: m.name for m in birth.metrics}


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_births_then_data_with_aliases(
    uplinks: Uplinks, recorder: Recorder, spb: Any, protocol: str
) -> None:
    async with uplinks.run(protocol=protocol) as up:
        (nbirth_msg,) = await recorder.count("NBIRTH", 1)
        assert nbirth_msg.topic == "spBv1.0/plant1/NBIRTH/gw1"
        assert not nbirth_msg.retain
        nbirth = spb.NBirth.decode(nbirth_msg.payload)
        assert nbirth.seq == 0
        by_name = {m.name: m for m in nbirth.metrics}
        assert by_name["bdSeq"].value == 0
        assert by_name["bdSeq"].datatype == spb.DataType.UINT64
        assert by_name["Node Control/Rebirth"].value is False
        assert by_name["Node Control/Rebirth"].datatype == spb.DataType.BOOLEAN

        r = reading(
            "press1",
            ("temp", "count", "mode"),
            T0 + 5,
            [21.25, 42.0, float("nan")],
            text=(None, None, "auto"),
        )
        await up.send([r], historical=False)

        (dbirth_msg,) = await recorder.count("DBIRTH", 1)
        (ddata_msg,) = await recorder.count("DDATA", 1)
        assert dbirth_msg.topic == "spBv1.0/plant1/DBIRTH/gw1/press1"
        assert ddata_msg.topic == "spBv1.0/plant1/DDATA/gw1/press1"
        dbirth = spb.DBirth.decode(dbirth_msg.payload)
        assert dbirth.seq == 1
        born = {m.name: m for m in dbirth.metrics}
        assert set(born) == {"temp", "count", "mode"}
        assert born["temp"].datatype == spb.DataType.DOUBLE
        assert born["mode"].datatype == spb.DataType.STRING
        assert born["temp"].value == 21.25
        assert len({m.alias for m in dbirth.metrics}) == 3

        # DDATA carries aliases only; the decoder resolves them through the DBIRTH.
        raw = spb._protobuf.Payload.FromString(ddata_msg.payload)
        assert all(not m.HasField("name") and m.HasField("alias") for m in raw.metrics)
        assert all(not m.HasField("datatype") for m in raw.metrics)
        ddata = spb.DData.decode(ddata_msg.payload, birth=dbirth)
        assert ddata.seq == 2
        got = {m.name: (m.value, m.timestamp, m.is_historical) for m in ddata.metrics}
        assert got == {
            "temp": (21.25, T0 + 5, False),
            "count": (42.0, T0 + 5, False),
            "mode": ("auto", T0 + 5, False),
        }
        assert up.connected
        sock = up._session.client.socket()  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        status = up.status()
        assert status["bd_seq"] == 0
        assert status["births_sent"] == 1
        assert status["seq"] == 3


async def test_several_readings_one_payload_historical_and_quality(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    async with uplinks.run() as up:
        await recorder.count("NBIRTH", 1)
        readings = [
            reading("m1", ("a", "b"), T0 + i * 1000, [float(i), -float(i)]) for i in range(3)
        ]
        readings.append(reading("m1", ("a", "b"), T0 + 3000, [float("nan"), 7.5], [BAD, UNCERTAIN]))
        await up.send(readings, historical=True)

        (dbirth_msg,) = await recorder.count("DBIRTH", 1)
        ddata_msgs = await recorder.count("DDATA", 1)
        assert len(ddata_msgs) == 1, "readings of one device go into one DDATA"
        dbirth = spb.DBirth.decode(dbirth_msg.payload)
        ddata = spb.DData.decode(ddata_msgs[0].payload, birth=dbirth)
        points = [(m.name, m.timestamp, m.value, m.is_historical) for m in ddata.metrics]
        assert points == [
            ("a", T0, 0.0, True),
            ("b", T0, -0.0, True),
            ("a", T0 + 1000, 1.0, True),
            ("b", T0 + 1000, -1.0, True),
            ("a", T0 + 2000, 2.0, True),
            ("b", T0 + 2000, -2.0, True),
            ("a", T0 + 3000, None, True),
            ("b", T0 + 3000, 7.5, True),
        ]
        assert ddata.metrics[6].is_null

        # Quality rides in a "Quality" property (the OPC UA status code), only when not good.
        pb = spb._protobuf.Payload.FromString(ddata_msgs[0].payload)
        props = [
            {k: v.int_value for k, v in zip(m.properties.keys, m.properties.values, strict=True)}
            for m in pb.metrics
        ]
        assert props[:6] == [{}] * 6
        assert props[6] == {"Quality": BAD}
        assert props[7] == {"Quality": UNCERTAIN}
        assert pb.metrics[6].properties.values[0].type == spb.DataType.UINT32


async def test_seq_runs_across_messages_and_wraps(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    async with uplinks.run() as up:
        await recorder.count("NBIRTH", 1)
        for i in range(300):
            await up.send([reading(f"d{i % 2}", ("x",), T0 + i, [float(i)])], historical=False)
        await recorder.count("DDATA", 300)
        node_msgs = [m for m in recorder.messages if m.kind in ("NBIRTH", "DBIRTH", "DDATA")]
        seqs = [spb._protobuf.Payload.FromString(m.payload).seq for m in node_msgs]
        # NBIRTH, DBIRTH d0, DDATA d0, DBIRTH d1, DDATA d1, then 298 DDATA: 303 messages.
        assert len(seqs) == 303
        assert seqs == [i % 256 for i in range(303)]
        assert [m.kind for m in node_msgs[:5]] == ["NBIRTH", "DBIRTH", "DDATA", "DBIRTH", "DDATA"]
        values = [
            spb._protobuf.Payload.FromString(m.payload).metrics[0].double_value
            for m in node_msgs
            if m.kind == "DDATA"
        ]
        assert values == [float(i) for i in range(300)]


async def test_new_signal_mid_stream_is_born_before_its_data(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    async with uplinks.run() as up:
        await recorder.count("NBIRTH", 1)
        await up.send([reading("m1", ("a",), T0, [1.0])], historical=False)
        await up.send([reading("m1", ("a",), T0 + 1, [2.0])], historical=False)
        await up.send([reading("m1", ("a", "b"), T0 + 2, [3.0, 30.0])], historical=False)
        await recorder.count("DDATA", 3)
        kinds = [m.kind for m in recorder.messages if m.kind != "NBIRTH"]
        assert kinds == ["DBIRTH", "DDATA", "DDATA", "DBIRTH", "DDATA"]
        births = [spb.DBirth.decode(m.payload) for m in recorder.of("DBIRTH")]
        first, second = (names_by_alias(b) for b in births)
        assert set(first.values()) == {"a"}
        assert set(second.values()) == {"a", "b"}
        # The alias of "a" is kept; the second birth carries a's latest value.
        assert {v: k for k, v in first.items()}["a"] == {v: k for k, v in second.items()}["a"]
        assert {m.name: m.value for m in births[1].metrics}["a"] == 2.0
        last = spb.DData.decode(recorder.of("DDATA")[-1].payload, birth=births[1])
        assert [(m.name, m.value) for m in last.metrics] == [("a", 3.0), ("b", 30.0)]


async def test_datatype_hint_makes_a_boolean(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    async with uplinks.run(datatypes={"m1/running": "Boolean", "m1/parts": "Int64"}) as up:
        await recorder.count("NBIRTH", 1)
        await up.send([reading("m1", ("running", "parts"), T0, [1.0, -3.0])], historical=False)
        (dbirth_msg,) = await recorder.count("DBIRTH", 1)
        (ddata_msg,) = await recorder.count("DDATA", 1)
        dbirth = spb.DBirth.decode(dbirth_msg.payload)
        assert {m.name: m.datatype for m in dbirth.metrics} == {
            "running": spb.DataType.BOOLEAN,
            "parts": spb.DataType.INT64,
        }
        ddata = spb.DData.decode(ddata_msg.payload, birth=dbirth)
        assert [(m.name, m.value) for m in ddata.metrics] == [("running", True), ("parts", -3)]
        await until_true(lambda: up.status()["messages_published"] == 3)
