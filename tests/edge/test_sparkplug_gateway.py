"""The whole gateway over Sparkplug B against a real Mosquitto: faults end to end.

connector -> durable buffer -> forwarder -> SparkplugUplink -> Mosquitto -> an independent
"host" (a paho subscriber of ``spBv1.0/#``, payloads decoded with pysparkplug, aliases resolved
from the DBIRTHs it received). The peers are real: Mosquitto as a process, the gateway in-process
or as a process killed with SIGKILL, a pymodbus server behind the Modbus connector.

Without Mosquitto or pysparkplug these tests skip locally and fail under CI=true (the fixtures
of tests/edge/sparkplug/).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from shopfloor.core.quality import BAD
from shopfloor.edge.buffer import StoreForwardBuffer
from shopfloor.edge.config import parse_edge_config
from shopfloor.edge.connectors.modbus.simserver import SimServer
from shopfloor.edge.model import Reading
from shopfloor.edge.runtime import Gateway, open_buffer
from shopfloor.edge.status import read_status
from shopfloor.edge.uplinks.sparkplug import SparkplugUplink

from .modbus.helpers import device, tcp
from .sparkplug import conftest as sparkplug_fixtures
from .sparkplug.helpers import Broker, Received, Recorder
from .sparkplug_gateway_helpers import (
    GROUP,
    NODE,
    Decoded,
    GridConnector,
    Point,
    decode,
    edge_doc,
    grid_value,
    lookup,
    signal_names,
    wait_for_points,
    write_yaml,
)

# The Mosquitto, recorder and pysparkplug fixtures of tests/edge/sparkplug/, used from here.
broker = sparkplug_fixtures.broker
recorder = sparkplug_fixtures.recorder
spb = sparkplug_fixtures.spb

pytestmark = pytest.mark.timeout(120)  # every wait is bounded; this bounds the whole test

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = 10.0
Key = tuple[str, str, int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def until(cond: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def keys_of(device_name: str, ts_ms: Iterable[int], signals: int = 20) -> set[Key]:
    return {(device_name, s, t) for t in ts_ms for s in signal_names(signals)}


def assert_in_order_per_signal(points: Iterable[Point]) -> None:
    """First arrivals of each (device, signal) come in timestamp order."""
    first: dict[Key, int] = {}
    for i, p in enumerate(points):
        first.setdefault(p.key, i)
    by_signal: dict[tuple[str, str], list[int]] = defaultdict(list)
    for device_name, sig, ts in sorted(first, key=first.__getitem__):
        by_signal[(device_name, sig)].append(ts)
    for where, stamps in by_signal.items():
        assert stamps == sorted(stamps), f"{where} arrived out of order"


def assert_seq_runs(decoded: Decoded, start: int, end: int) -> None:
    """From the NBIRTH at ``start`` every message of the node adds one to seq (mod 256)."""
    seqs = [s for s in decoded.seqs[start:end] if s is not None]
    assert seqs == [k % 256 for k in range(len(seqs))], f"seq gaps in {seqs}"


# --- 1. the broker goes away while data flows -------------------------------------------------
def test_broker_outage_while_data_flows_every_point_once_in_order_historical(
    broker: Broker, recorder: Recorder, spb: Any, tmp_path: Path
) -> None:
    """Mosquitto stopped (SIGTERM) for 10 s and started again on its port while a connector
    produces 20 signals every 50 ms; then the source stops and the buffer drains.

    Asserted, by (device, signal, timestamp): every point produced arrived, exactly once, with
    its value; in timestamp order per signal; the points produced during the outage with
    is_historical, the live ones before it without (the first ones, produced before the node
    was born, wait in the buffer and are historical too); after the restart an NBIRTH with bdSeq 1,
    then the DBIRTH, then the data, seq counting up from the NBIRTH in both sessions.

    Why exactly once can be asserted:
    - the device has one reading of 20 points per 50 ms and a batch is at most 1000 points,
      below max_metrics_per_message, so every send() is ONE MQTT message. (A batch of several
      messages, i.e. of several devices, that the broker half took before it went down is
      resent whole: its first messages would arrive twice, by design of whole-batch acks.)
    - Mosquitto is single-threaded and on SIGTERM only sets a flag that its loop checks
      between packets: an incoming PUBLISH is either handled whole (forwarded to the recorder
      and PUBACKed, both written to the socket in the same step) or not read at all (no PUBACK;
      the gateway resends it to the next broker). SIGKILL could land between forwarding and
      PUBACK: a duplicate sent by the gateway, the race this test avoids by using SIGTERM.
    - Mosquitto's persistence keeps the recorder's (clean_session false) session, so what is
      published while the recorder reconnects is queued for it. A message the broker had sent
      to the recorder without getting the recorder's PUBACK is delivered again, byte-identical:
      such copies (QoS 1 redeliveries between broker and host, not the gateway's doing, and
      impossible for the gateway to produce since each of its messages has its own seq and
      timestamp) are removed and counted before the points are compared.
    """
    grid = {"type": "grid", "name": "grid", "device": "press-01", "signals": 20, "period_s": 0.05}
    cfg = parse_edge_config(edge_doc(tmp_path, broker.port, [grid]), lookup=lookup)
    marks: dict[str, int] = {}

    async def scenario() -> tuple[Gateway, list[int], Decoded]:
        gw = Gateway(cfg)
        task = asyncio.create_task(gw.run())
        try:
            await asyncio.wait_for(gw.ready.wait(), 10)
            uplink = gw.uplink
            assert isinstance(uplink, SparkplugUplink)
            # What was produced before the node was born waited in the buffer: historical.
            await until(lambda: uplink.connected and gw.points_out > 0 and not gw.backlog, 20, "up")
            marks["live"] = now_ms()
            await asyncio.sleep(2.0)  # live data
            conn = gw.slots[0].connector
            assert isinstance(conn, GridConnector)
            assert uplink.status()["bd_seq"] == 0

            marks["down"] = now_ms()
            await asyncio.to_thread(broker.stop)  # SIGTERM, returns once Mosquitto exited
            marks["stopped"] = now_ms()
            in_before = gw.points_in
            await asyncio.sleep(OUTAGE_S)
            assert gw.points_in >= in_before + 100 * 20, "the connector kept producing"
            assert not uplink.connected
            assert gw.send_failures >= 1
            assert gw.backlog
            assert gw.buffer.stats().depth_points >= 100 * 20

            marks["restart"] = now_ms()
            await asyncio.to_thread(broker.start)
            await until(lambda: uplink.connected and not gw.backlog, 20, "reconnect and drain")
            assert uplink.status()["bd_seq"] == 1
            await asyncio.sleep(1.0)  # live data again
            conn.paused = True  # the source stops
            await until(lambda: gw.points_out == gw.points_in, 20, "the buffer drained")
            assert gw.buffer.stats().depth_points == 0
            produced = list(conn.produced)
            expected = keys_of("press-01", produced)
            decoded = await asyncio.to_thread(wait_for_points, recorder, spb, expected, 20.0)
        finally:
            gw.request_stop()
            await asyncio.wait_for(task, 20)
        return gw, produced, decoded

    gw, produced, decoded = asyncio.run(scenario())
    slot = gw.slots[0]
    assert (slot.restarts, slot.points_rejected) == (0, 0)

    # every point exactly once, with its value, in order
    points = decoded.points
    dups = decoded.duplicates()
    assert not dups, f"{sum(dups.values())} points arrived twice, e.g. {min(dups)}"
    assert {p.key for p in points} == keys_of("press-01", produced)
    assert len(points) == 20 * len(produced)
    wrong = [p for p in points if p.value != grid_value(p.signal, p.ts_ms)]
    assert not wrong, wrong[:3]
    assert_in_order_per_signal(points)

    # the outage's points went as historical, the live ones before it not
    outage = [p for p in points if marks["stopped"] <= p.ts_ms <= marks["restart"]]
    assert len(outage) >= 100 * 20
    assert all(p.historical for p in outage)
    live = [p for p in points if marks["live"] < p.ts_ms < marks["down"] - 500]
    assert len(live) >= 15 * 20
    assert not [p for p in live if p.historical][:3]

    # births with the next bdSeq before any data of the new session
    nbirths = decoded.of("NBIRTH")
    assert [decoded.bd_seqs[i] for i in nbirths] == [0, 1]
    reborn = nbirths[1]
    kinds = [m.kind for m in decoded.messages]
    assert kinds[reborn : reborn + 3] == ["NBIRTH", "DBIRTH", "DDATA"]
    assert min(p.message for p in points if p.ts_ms >= marks["stopped"]) > reborn + 1
    assert_seq_runs(decoded, nbirths[0], reborn)
    assert_seq_runs(decoded, reborn, len(decoded.messages))
    print(
        f"\n{len(points)} points once each, {len(outage)} of them historical from the outage; "
        f"{decoded.redeliveries} byte-identical redeliveries by the broker removed"
    )


# --- 2. the gateway is killed with SIGKILL and started again -----------------------------------
def log_lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


def wait_until(cond: Callable[[], bool], within_s: float, what: str, proc: Any = None) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if proc is not None:
            assert proc.poll() is None, f"the gateway exited with {proc.returncode}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        time.sleep(0.05)


def status_of(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return read_status(path)
    return {}


def test_gateway_killed_mid_drain_delivers_its_buffer_after_restart(
    broker: Broker, recorder: Recorder, spb: Any, tmp_path: Path
) -> None:
    """``kill -9`` of a gateway process (broker up) while it drains a backlog; restarted, it
    delivers every reading its buffer had accepted.

    The backlog: the node waits for the primary host ``scada`` (Sparkplug 3.0 STATE), so the
    readings of the first 2 s stay in the buffer; then the host comes online, the buffer drains
    in batches of 100 points, and the gateway is killed as soon as the first DDATA arrived.
    "Accepted" is what the connector logged after the sink returned (on disk, fsync always).
    Asserted: every accepted point of both lives arrived with its value, first arrivals in
    order per signal; points that arrived twice were sent before the kill but not yet
    acknowledged in the buffer, at most one batch (the forwarder has one batch in flight).
    Their number is printed, not hidden.
    """
    log_file = tmp_path / "accepted.log"
    grid = {
        "type": "grid",
        "name": "grid",
        "device": "oven-01",
        "signals": 20,
        "period_s": 0.01,
        "log_file": str(log_file),
    }
    batch = 100
    doc = edge_doc(
        tmp_path,
        broker.port,
        [grid],
        uplink={"primary_host_id": "scada"},
        forwarder={"batch_points": batch, "retry_initial": 0.05, "retry_max": 0.2},
    )
    path = write_yaml(tmp_path / "edge.yaml", doc)
    status_file = tmp_path / "edge-data" / "status.json"
    cmd = [sys.executable, "-m", "tests.edge.sparkplug_gateway_helpers", str(path)]

    with (tmp_path / "gw.log").open("ab") as out:
        # first life: held back, then killed while draining
        gw = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)
        try:
            wait_until(
                lambda: (
                    len(log_lines(log_file)) >= 200
                    and status_of(status_file).get("uplink", {}).get("connected") is True
                ),
                30,
                "a backlog held back for the primary host",
                gw,
            )
            assert recorder.of("DDATA") == [], "data went out before the host was online"
            state = json.dumps({"online": True, "timestamp": now_ms()}).encode()
            info = recorder.client.publish("spBv1.0/STATE/scada", state, qos=1, retain=True)
            info.wait_for_publish(5)
            recorder.wait_for(lambda ms: any(m.kind == "DDATA" for m in ms), 10, "DDATA")
            os.kill(gw.pid, signal.SIGKILL)
            gw.wait(10)
        finally:
            if gw.poll() is None:
                gw.kill()
                gw.wait(10)
        accepted_1 = log_lines(log_file)
        # the broker publishes the Will of the vanished node
        recorder.wait_for(lambda ms: any(m.kind == "NDEATH" for m in ms), 10, "NDEATH")
        before = decode(spb, list(recorder.messages))
        (ndeath,) = before.of("NDEATH")
        assert before.bd_seqs[ndeath] == 0
        sent_before = {p.key for p in before.points}
        in_buffer = keys_of("oven-01", accepted_1) - sent_before

        # second life: 20 more readings, then idle
        doc["connectors"][0]["count"] = 20
        write_yaml(path, doc)
        gw = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)
        try:
            wait_until(
                lambda: (
                    (st := status_of(status_file)).get("pid") == gw.pid
                    and st["connectors"]["grid"]["points_in"] == 20 * 20
                    and st["buffer"]["depth_points"] == 0
                ),
                30,
                "the backlog delivered",
                gw,
            )
            accepted = log_lines(log_file)
            expected = keys_of("oven-01", accepted)
            decoded = wait_for_points(recorder, spb, expected, 20.0)
            gw.send_signal(signal.SIGTERM)  # a clean stop this time
            assert gw.wait(20) == 0
        finally:
            if gw.poll() is None:
                gw.kill()
                gw.wait(10)

    assert len(accepted_1) >= 200
    assert len(in_buffer) >= 20, "the kill came after the backlog was gone: nothing tested"
    points = decoded.points
    received = {p.key for p in points}
    assert expected <= received
    # A reading may be on disk without its log line (killed in between): at most one reading.
    extra = received - expected
    assert len(extra) <= 20
    assert all(accepted_1[-1] < ts < accepted[len(accepted_1)] for _, _, ts in extra)
    wrong = [p for p in points if p.value != grid_value(p.signal, p.ts_ms)]
    assert not wrong, wrong[:3]
    assert_in_order_per_signal(points)

    dups = decoded.duplicates()
    life_1 = keys_of("oven-01", accepted_1) | extra
    assert set(dups) <= life_1, "only readings sent before the kill may arrive twice"
    assert set(dups) <= sent_before
    assert max(dups.values(), default=0) == (1 if dups else 0)
    assert sum(dups.values()) <= batch
    # What waited in the buffer through the crash goes out as historical, however young.
    left_over = [p for p in points if p.key in in_buffer]
    assert left_over
    assert all(p.historical for p in left_over)
    after_kill = [i for i in decoded.of("NBIRTH") if i > ndeath]
    assert [decoded.bd_seqs[i] for i in after_kill] == [0]  # bdSeq is not kept (docs: Limits)
    print(
        f"\n{len(expected)} accepted points delivered; {len(in_buffer)} were in the buffer at "
        f"the kill; {sum(dups.values())} points ({len(dups) // 20} readings) arrived twice"
    )


# --- 3. commands: DCMD -> gateway -> Modbus connector -> pymodbus server -> DDATA --------------
def cmd_topic(device_id: str) -> str:
    return f"spBv1.0/{GROUP}/DCMD/{NODE}/{device_id}"


def one_metric_ddata(spb: Any, device_id: str, after: int) -> Callable[[list[Received]], bool]:
    """A DDATA of ``device_id`` with a single metric (a command's answer; polls carry all)."""
    topic = f"spBv1.0/{GROUP}/DDATA/{NODE}/{device_id}"

    def pred(ms: list[Received]) -> bool:
        return any(
            m.topic == topic and len(spb._protobuf.Payload.FromString(m.payload).metrics) == 1
            for m in ms[after:]
        )

    return pred


def answer(spb: Any, ms: list[Received], device_id: str, after: int) -> tuple[Any, Any]:
    """The answer DDATA after index ``after``: raw protobuf metric, and decoded with its DBIRTH."""
    topic = f"spBv1.0/{GROUP}/DDATA/{NODE}/{device_id}"
    (msg,) = [
        m
        for m in ms[after:]
        if m.topic == topic and len(spb._protobuf.Payload.FromString(m.payload).metrics) == 1
    ]
    birth_topic = topic.replace("/DDATA/", "/DBIRTH/")
    birth = spb.DBirth.decode([m for m in ms if m.topic == birth_topic][-1].payload)
    (raw,) = spb._protobuf.Payload.FromString(msg.payload).metrics
    (metric,) = spb.DData.decode(msg.payload, birth=birth).metrics
    return raw, metric


def properties(raw: Any) -> dict[str, Any]:
    return dict(zip(raw.properties.keys, raw.properties.values, strict=True))


def test_dcmd_written_to_a_modbus_device_and_answered_with_the_read_back(
    broker: Broker, recorder: Recorder, spb: Any, tmp_path: Path
) -> None:
    """A host's DCMD goes through the gateway to the Modbus connector, is written to a real
    pymodbus server, read back, and answered as DDATA with the read-back value (42.57 on an
    int16 point scaled 0.1 becomes 42.6). Failures are answered with a null value, Bad quality
    and the reason, and write nothing: a device no connector owns (readings of it left in the
    buffer from an earlier configuration, so the node sent its DBIRTH), and a read-only point.
    A DCMD for a device the node never announced in a DBIRTH cannot be answered (the host has
    no alias for it): it is dropped, reported in the uplink's status, and writes nothing.
    """
    points = [
        {"name": "temp", "table": "input", "address": 0, "type": "int16", "scale": 0.1},
        {"name": "setpoint", "table": "holding", "address": 10, "type": "int16", "scale": 0.1},
        {"name": "mode", "table": "holding", "address": 11, "type": "uint16"},
    ]

    async def scenario() -> None:
        async with SimServer([1]) as server:
            await server.set_registers(1, 0, [215], "input")
            await server.set_registers(1, 10, [200, 3])
            boiler = device("boiler-01", points, period_s=0.25)
            modbus = {
                "type": "modbus",
                "name": "mb",
                "connections": [tcp("plc", server.port, [boiler])],
            }
            cfg = parse_edge_config(edge_doc(tmp_path, broker.port, [modbus]))  # real connectors
            # A device removed from the configuration while its readings waited in the buffer.
            leftover = open_buffer(cfg)
            assert isinstance(leftover, StoreForwardBuffer)
            old = time.time_ns() - 60 * 10**9
            leftover.append([Reading.at("ghost-01", old, ("setpoint",), [1.0])])
            leftover.close()

            gw = Gateway(cfg)
            task = asyncio.create_task(gw.run())
            try:
                await asyncio.wait_for(gw.ready.wait(), 10)
                uplink = gw.uplink
                assert isinstance(uplink, SparkplugUplink)
                await recorder.until(
                    lambda ms: (
                        {"ghost-01", "boiler-01"}
                        <= {m.topic.rsplit("/", 1)[1] for m in ms if m.kind == "DDATA"}
                    ),
                    15,
                    "data of both devices",
                )

                # the write, read back
                mark = len(recorder.messages)
                setpoint = spb.Metric(now_ms(), "setpoint", spb.DataType.DOUBLE, 42.57)
                await publish(recorder, cmd_topic("boiler-01"), spb, setpoint)
                ms = await recorder.until(one_metric_ddata(spb, "boiler-01", mark), 10, "answer")
                raw, metric = answer(spb, ms, "boiler-01", mark)
                assert metric.name == "setpoint"
                assert metric.value == pytest.approx(42.6)
                assert not metric.is_historical
                assert not metric.is_null
                assert "Quality" not in properties(raw)  # good
                assert await server.registers(1, 10, 2) == [426, 3]
                held = await server.registers(1, 0, 20)

                # unknown to the gateway (no connector owns it): failed, nothing written
                mark = len(recorder.messages)
                ghost = spb.Metric(now_ms(), "setpoint", spb.DataType.DOUBLE, 5.0)
                await publish(recorder, cmd_topic("ghost-01"), spb, ghost)
                ms = await recorder.until(one_metric_ddata(spb, "ghost-01", mark), 10, "answer")
                raw, metric = answer(spb, ms, "ghost-01", mark)
                assert (metric.name, metric.value) == ("setpoint", None)
                assert raw.is_null
                assert properties(raw)["Quality"].int_value == BAD
                message = properties(raw)["Message"].string_value
                assert "unknown device 'ghost-01'" in message
                assert "boiler-01" in message

                # a read-only point: failed with the reason, nothing written
                mark = len(recorder.messages)
                temp = spb.Metric(now_ms(), "temp", spb.DataType.DOUBLE, 99.0)
                await publish(recorder, cmd_topic("boiler-01"), spb, temp)
                ms = await recorder.until(one_metric_ddata(spb, "boiler-01", mark), 10, "answer")
                raw, metric = answer(spb, ms, "boiler-01", mark)
                assert (metric.name, metric.value) == ("temp", None)
                assert properties(raw)["Quality"].int_value == BAD
                assert "read-only" in properties(raw)["Message"].string_value

                # never born: not answerable, dropped and reported
                mark = len(recorder.messages)
                nobody = spb.Metric(now_ms(), "setpoint", spb.DataType.DOUBLE, 7.0)
                await publish(recorder, cmd_topic("nobody"), spb, nobody)
                await until(lambda: "nobody" in (uplink.status()["last_error"] or ""), 10, "error")
                await asyncio.sleep(0.3)
                sent = [m for m in recorder.messages[mark:] if m.kind != "DCMD"]
                assert not [m for m in sent if m.topic.endswith("/nobody")], "nobody answered"

                assert await server.registers(1, 0, 20) == held
                assert await server.registers(1, 0, 20, "input") == [215] + [0] * 19
                assert uplink.status()["commands_handled"] == 3
            finally:
                gw.request_stop()
                await asyncio.wait_for(task, 20)

    asyncio.run(scenario())


async def publish(recorder: Recorder, topic: str, spb: Any, metric: Any) -> None:
    payload = spb.DCmd(now_ms(), (metric,)).encode(include_dtypes=True)
    info = recorder.client.publish(topic, payload, qos=1)
    await asyncio.to_thread(info.wait_for_publish, 5)
