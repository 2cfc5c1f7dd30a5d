"""NCMD rebirth and DCMD writes, sent by a host encoded with pysparkplug."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shopfloor.core.quality import BAD
from shopfloor.edge.model import WriteRequest, WriteResult

from .helpers import Recorder, Uplinks, reading, until_true

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000


def publish(recorder: Recorder, topic: str, payload: bytes) -> None:
    recorder.client.publish(topic, payload, qos=1).wait_for_publish(5)


async def test_rebirth_on_ncmd(uplinks: Uplinks, recorder: Recorder, spb: Any) -> None:
    async with uplinks.run() as up:
        await recorder.count("NBIRTH", 1)
        await up.send([reading("m1", ("a", "b"), T0, [1.0, 2.0])], historical=False)
        await up.send([reading("m2", ("c",), T0, [3.0])], historical=False)
        await recorder.count("DDATA", 2)

        metric = spb.Metric(T0, "Node Control/Rebirth", spb.DataType.BOOLEAN, True)
        cmd = spb.NCmd(T0, (metric,)).encode(include_dtypes=True)
        publish(recorder, "spBv1.0/plant1/NCMD/gw1", cmd)

        nbirths = await recorder.count("NBIRTH", 2)
        dbirths = await recorder.count("DBIRTH", 4)
        second = spb.NBirth.decode(nbirths[1].payload)
        assert second.seq == 0
        assert {m.name: m.value for m in second.metrics}["bdSeq"] == 0, "same session, same bdSeq"
        reborn = [spb.DBirth.decode(m.payload) for m in dbirths[2:]]
        assert [m.topic.rsplit("/", 1)[1] for m in dbirths[2:]] == ["m1", "m2"]
        assert [b.seq for b in reborn] == [1, 2]
        assert {m.name: m.value for m in reborn[0].metrics} == {"a": 1.0, "b": 2.0}
        assert up.status()["births_sent"] == 2

        # Data continues after the rebirth with the next seq.
        await up.send([reading("m1", ("a",), T0 + 1, [5.0])], historical=False)
        ddata = await recorder.count("DDATA", 3)
        assert spb.DData.decode(ddata[-1].payload, birth=reborn[0]).seq == 3

        # A rebirth request of false is no request.
        metric = spb.Metric(T0, "Node Control/Rebirth", spb.DataType.BOOLEAN, False)
        publish(recorder, "spBv1.0/plant1/NCMD/gw1", spb.NCmd(T0, (metric,)).encode())
        await up.send([reading("m1", ("a",), T0 + 2, [6.0])], historical=False)
        await recorder.count("DDATA", 4)
        assert len(recorder.of("NBIRTH")) == 2


async def test_dcmd_routed_to_on_command_and_answered(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    requests: list[WriteRequest] = []

    async def handler(req: WriteRequest) -> WriteResult:
        requests.append(req)
        if req.signal == "locked":
            return WriteResult(req.id, False, "signal is read-only")
        # The device clamps the setpoint: the read-back differs from what was asked.
        return WriteResult(req.id, True, read_back=min(float(req.value), 80.0))

    async with uplinks.run() as up:
        up.on_command = handler
        await recorder.count("NBIRTH", 1)
        await up.send(
            [reading("oven/1", ("setpoint", "locked"), T0, [50.0, 1.0])], historical=False
        )
        (dbirth_msg,) = await recorder.count("DBIRTH", 1)
        assert dbirth_msg.topic.endswith("/oven_1"), "'/' in a device name cannot be a topic level"
        dbirth = spb.DBirth.decode(dbirth_msg.payload)
        alias = {m.name: m.alias for m in dbirth.metrics}

        # By name, as most hosts do.
        by_name = spb.Metric(T0, "setpoint", spb.DataType.DOUBLE, 95.0)
        publish(
            recorder,
            "spBv1.0/plant1/DCMD/gw1/oven_1",
            spb.DCmd(T0, (by_name,)).encode(include_dtypes=True),
        )
        await until_true(lambda: len(requests) == 1, what="first command")
        assert requests[0].device == "oven/1"
        assert requests[0].signal == "setpoint"
        assert requests[0].value == 95.0
        replies = await recorder.count("DDATA", 2)
        reply = spb.DData.decode(replies[1].payload, birth=dbirth)
        assert [(m.name, m.value) for m in reply.metrics] == [("setpoint", 80.0)]

        # By alias only, no name and no datatype.
        by_alias = spb.Metric(T0, None, spb.DataType.DOUBLE, 60.0, alias=alias["setpoint"])
        publish(recorder, "spBv1.0/plant1/DCMD/gw1/oven_1", spb.DCmd(T0, (by_alias,)).encode())
        await until_true(lambda: len(requests) == 2, what="second command")
        assert (requests[1].signal, requests[1].value) == ("setpoint", 60.0)
        replies = await recorder.count("DDATA", 3)
        reply = spb.DData.decode(replies[2].payload, birth=dbirth)
        assert [(m.name, m.value) for m in reply.metrics] == [("setpoint", 60.0)]

        # A refused write answers with a null value, bad quality and the reason.
        refused = spb.Metric(T0, "locked", spb.DataType.DOUBLE, 0.0)
        publish(
            recorder,
            "spBv1.0/plant1/DCMD/gw1/oven_1",
            spb.DCmd(T0, (refused,)).encode(include_dtypes=True),
        )
        replies = await recorder.count("DDATA", 4)
        pb = spb._protobuf.Payload.FromString(replies[3].payload)
        (metric,) = pb.metrics
        assert metric.alias == alias["locked"]
        assert metric.is_null
        props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
        assert props["Quality"].int_value == BAD
        assert props["Message"].string_value == "signal is read-only"
        # Every answer echoes the command's timestamp, so a host tells it from a poll.
        assert props["Command"].long_value == T0

        # An unknown metric is not routed; the error is visible in the status.
        unknown = spb.Metric(T0, "nope", spb.DataType.DOUBLE, 1.0)
        publish(
            recorder,
            "spBv1.0/plant1/DCMD/gw1/oven_1",
            spb.DCmd(T0, (unknown,)).encode(include_dtypes=True),
        )
        await until_true(lambda: "nope" in (up.status()["last_error"] or ""), what="error")
        await asyncio.sleep(0.1)
        assert len(requests) == 3
