"""The Will NDEATH, broker outages, reconnects with the next bdSeq, the primary host's STATE."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from shopfloor.edge.uplink import UplinkError

from .helpers import Broker, Recorder, Uplinks, reading, until_true

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000


def bd_seq_of(spb: Any, raw: bytes) -> int:
    pb = spb._protobuf.Payload.FromString(raw)
    return {m.name: m.long_value for m in pb.metrics}["bdSeq"]


async def test_will_ndeath_carries_the_births_bdseq_then_reconnect(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    async with uplinks.run() as up:
        (nbirth,) = await recorder.count("NBIRTH", 1)
        assert bd_seq_of(spb, nbirth.payload) == 0
        await up.send([reading("m1", ("a",), T0, [1.0])], historical=False)
        await recorder.count("DDATA", 1)

        # Kill the TCP connection without an MQTT DISCONNECT: the broker publishes the Will.
        sock = up._session.client.socket()  # type: ignore[union-attr]
        sock.shutdown(socket.SHUT_RDWR)

        (ndeath,) = await recorder.count("NDEATH", 1)
        assert ndeath.topic == "spBv1.0/plant1/NDEATH/gw1"
        assert spb.NDeath.decode(ndeath.payload).bd_seq_metric.value == 0

        nbirths = await recorder.count("NBIRTH", 2)
        assert bd_seq_of(spb, nbirths[1].payload) == 1
        dbirths = await recorder.count("DBIRTH", 2)
        reborn = spb.DBirth.decode(dbirths[1].payload)
        assert reborn.seq == 1
        assert {m.name: m.value for m in reborn.metrics} == {"a": 1.0}

        await until_true(lambda: up.connected and up.status()["born"], what="reconnected")
        await up.send([reading("m1", ("a",), T0 + 1, [2.0])], historical=False)
        ddata = await recorder.count("DDATA", 2)
        data = spb.DData.decode(ddata[1].payload, birth=reborn)
        assert (data.seq, [m.value for m in data.metrics]) == (2, [2.0])
        assert up.status()["sessions"] == 2

    # A clean stop publishes the NDEATH itself (a clean DISCONNECT discards the Will).
    ndeaths = await recorder.count("NDEATH", 2)
    assert spb.NDeath.decode(ndeaths[1].payload).bd_seq_metric.value == 1


async def test_broker_down_send_raises_then_recovers(
    broker: Broker, uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    async with uplinks.run(publish_timeout_s=2.0) as up:
        await recorder.count("NBIRTH", 1)
        await up.send([reading("m1", ("a",), T0, [1.0])], historical=False)

        broker.stop()
        with pytest.raises(UplinkError):
            # Either the loss is already seen (not connected) or no PUBACK comes in time.
            await up.send([reading("m1", ("a",), T0 + 1, [2.0])], historical=False)
        await until_true(lambda: not up.connected, what="disconnect noticed")
        with pytest.raises(UplinkError, match="not connected"):
            await up.send([reading("m1", ("a",), T0 + 2, [3.0])], historical=False)
        assert up.status()["last_error"]

        broker.start()
        await until_true(lambda: up.connected and up.status()["born"], 15, "reconnected")
        assert up.status()["bd_seq"] == 1
        nbirths = await recorder.count("NBIRTH", 2)
        assert bd_seq_of(spb, nbirths[-1].payload) == 1

        # The buffer's retry: the same readings again, now acknowledged.
        await up.send([reading("m1", ("a",), T0 + 2, [3.0])], historical=True)
        dbirth = spb.DBirth.decode(recorder.of("DBIRTH")[-1].payload)
        ddata = await recorder.until(
            lambda ms: any(m.kind == "DDATA" and m.topic.endswith("m1") for m in ms[-2:]),
            what="DDATA after restart",
        )
        last = spb.DData.decode([m for m in ddata if m.kind == "DDATA"][-1].payload, birth=dbirth)
        assert [(m.name, m.value, m.timestamp, m.is_historical) for m in last.metrics] == [
            ("a", 3.0, T0 + 2, True)
        ]


async def test_primary_host_state_gates_births_and_data(
    uplinks: Uplinks, recorder: Recorder, spb: Any
) -> None:
    state_topic = "spBv1.0/STATE/scada1"

    def state(online: bool) -> None:
        body = json.dumps({"online": online, "timestamp": T0}).encode()
        recorder.client.publish(state_topic, body, qos=1, retain=True).wait_for_publish(5)

    async with uplinks.run(primary_host_id="scada1") as up:
        await until_true(lambda: up.connected, what="connected")
        with pytest.raises(UplinkError, match="scada1 is not online"):
            await up.send([reading("m1", ("a",), T0, [1.0])], historical=False)
        await asyncio.sleep(0.3)
        assert recorder.of("NBIRTH") == []

        state(True)
        await recorder.count("NBIRTH", 1)
        await up.send([reading("m1", ("a",), T0, [1.0])], historical=False)
        await recorder.count("DDATA", 1)

        state(False)
        await until_true(lambda: up.status()["primary_host_online"] is False, what="offline")
        with pytest.raises(UplinkError, match="held back"):
            await up.send([reading("m1", ("a",), T0 + 1, [2.0])], historical=False)

        state(True)
        nbirths = await recorder.count("NBIRTH", 2)
        assert spb.NBirth.decode(nbirths[1].payload).seq == 0
        await recorder.count("DBIRTH", 2)
        await up.send([reading("m1", ("a",), T0 + 1, [2.0])], historical=True)
        await recorder.count("DDATA", 2)
    # Retained STATE must not leak into the next test's broker: each test has its own broker.
