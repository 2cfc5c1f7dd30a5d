"""Rules in their own processes (rules/bus.py): durable batches from an ingest worker reach
two partitioned rules runtimes through a real Mosquitto; each device's alarm is raised once,
by the runtime owning the device, and reaches an API process's live subscribers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shopfloor.core.errors import BadInput, Malformed
from shopfloor.core.types import make_batch
from shopfloor.registry import Registry
from shopfloor.registry.service import SignalSpec
from shopfloor.rules.alarms import AlarmEvent, AlarmState, Cause, Priority
from shopfloor.rules.bus import (
    BusEndpoint,
    ProcessBus,
    decode_alarms,
    decode_batch,
    encode_alarms,
    encode_batch,
)
from shopfloor.rules.runtime import LiveAlarm, Partition, RulesRuntime
from shopfloor.rules.store import AlarmStore, RuleStore
from tests.services import MOSQUITTO, Mosquitto, require

S = 1_000_000_000
DEVICES = [f"press-{i:02d}" for i in range(8)]


def test_partitions_split_devices_stably_and_completely() -> None:
    parts = [Partition(i, 3) for i in range(3)]
    owners = {d: [p.index for p in parts if p.owns(d)] for d in DEVICES * 2}
    assert all(len(o) == 1 for o in owners.values())  # every device exactly once
    assert len({o[0] for o in owners.values()}) > 1  # and not all in one
    assert Partition.parse("2/3") == Partition(2, 3)
    for bad in ("3/3", "x/2", "1", "-1/2"):
        with pytest.raises(BadInput, match="rules partition"):
            Partition.parse(bad)


def test_payloads_round_trip_and_garbage_is_malformed() -> None:
    batch = make_batch(7, [1, 2], [10, 20], [1.5, 2.5])
    assert decode_batch(encode_batch(batch)).equals(batch)
    event = AlarmEvent(
        5, "3/4", AlarmState.NORMAL, AlarmState.UNACK_ACTIVE, Cause.CONDITION_ACTIVE, None, None, 95.0,
        "press-shop", Priority.HIGH,
    )  # fmt: skip
    change = LiveAlarm("hot", "press-01", 12, event)
    assert decode_alarms(encode_alarms([change])) == [change]
    for payload, fn in ((b"\x00garbage", decode_batch), (b'[{"rule": 1}]', decode_alarms)):
        with pytest.raises(Malformed):
            fn(payload)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    require("mosquitto", MOSQUITTO.exists())
    (tmp_path / "mosq").mkdir()
    b = Mosquitto(tmp_path / "mosq")
    b.start()
    yield b
    b.stop()


async def _until(cond: object, what: str) -> None:
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_rules_processes_split_the_devices_and_miss_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    reg.upgrade()
    tenant, _ = reg.create_tenant("acme")
    reg.create_device_type(tenant.id, "press", [SignalSpec("temp")])
    for d in DEVICES:
        reg.create_device(tenant.id, d, "press")
    sig = {s.device: s.id for s in reg.list_signals(tenant.id)}
    rules = RuleStore(reg)
    # An on-delay: the alarm needs two readings over the limit 2 s apart, in two batches, so a
    # runtime that saw only some batches of a device would never raise it.
    rules.create(
        tenant.id, "hot", "threshold", {"signal": "temp", "limit": 80.0, "on_delay": 2.0},
        device_type="press",
    )  # fmt: skip
    ep = BusEndpoint("127.0.0.1", broker.port)

    async def scenario() -> None:
        runtimes = [
            RulesRuntime(reg, rules, AlarmStore(reg), refresh_s=0.0, partition=Partition(i, 2))
            for i in range(2)
        ]
        buses = [
            ProcessBus(ep, f"shopfloor-rules-{i}-of-2", on_batch=rt.feed)
            for i, rt in enumerate(runtimes)
        ]
        api_side = RulesRuntime(reg, rules, AlarmStore(reg))  # evaluates nothing, fans out
        api_bus = ProcessBus(ep, "shopfloor-api-1", on_alarms=api_side.deliver)
        ingest_bus = ProcessBus(ep, "shopfloor-ingest-1")
        workers = [asyncio.create_task(rt.run()) for rt in runtimes]
        for rt, bus in zip(runtimes, buses, strict=True):
            rt.on_published = bus.publish_alarms
        for bus in (*buses, api_bus, ingest_bus):
            await bus.start()
        await asyncio.sleep(0.3)  # subscriptions in place
        async with api_side.subscribe(tenant.id) as live:
            t0 = time.time_ns()
            ids = np.array([sig[d] for d in DEVICES])
            for step in range(3):  # three batches, each with every device, 1 s apart
                ts = np.full(len(ids), t0 + step * S)
                ingest_bus.publish_batch(tenant.id, make_batch(tenant.id, ids, ts, [95.0] * 8))
            seen: list[LiveAlarm] = []

            def all_seen() -> bool:
                while not live.queue.empty():
                    seen.append(live.queue.get_nowait())
                return len(seen) >= len(DEVICES)

            await _until(all_seen, "an alarm per device on the API process's live feed")
            await asyncio.sleep(0.3)  # a duplicate would arrive by now
            all_seen()
        for w in workers:
            w.cancel()
        for bus in (*buses, api_bus, ingest_bus):
            await bus.stop()
        assert sorted(c.device for c in seen) == DEVICES  # each device once
        assert {c.event.to_state for c in seen} == {AlarmState.UNACK_ACTIVE}
        by_owner = [sum(rt.partition.owns(c.device) for c in seen) for rt in runtimes]
        assert sum(by_owner) == len(DEVICES)
        assert min(by_owner) > 0
        for rt in runtimes:  # each stored (published) only its own devices' alarms
            assert rt.published == sum(rt.partition.owns(d) for d in DEVICES)
        stored = AlarmStore(reg).list_alarms(tenant.id)
        assert sorted(a.device for a in stored) == DEVICES

    asyncio.run(asyncio.wait_for(scenario(), 60))
    reg.close()


def test_batches_wait_in_the_broker_while_a_rules_process_is_away(
    tmp_path: Path, broker: Mosquitto
) -> None:
    ep = BusEndpoint("127.0.0.1", broker.port)
    got: list[tuple[int, int]] = []

    async def scenario() -> None:
        rules = ProcessBus(
            ep, "shopfloor-rules-0-of-1", on_batch=lambda t, b: got.append((t, b.num_rows))
        )
        ingest = ProcessBus(ep, "shopfloor-ingest-1")
        await rules.start()
        await ingest.start()
        await asyncio.sleep(0.3)
        await rules.stop()  # the session stays in the broker
        for n in (1, 2, 3):
            ingest.publish_batch(4, make_batch(4, [1] * n, list(range(n))))
        await asyncio.sleep(0.3)
        back = ProcessBus(
            ep, "shopfloor-rules-0-of-1", on_batch=lambda t, b: got.append((t, b.num_rows))
        )
        await back.start()
        await _until(lambda: len(got) == 3, "the three batches sent while away")
        await back.stop()
        await ingest.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert got == [(4, 1), (4, 2), (4, 3)]
