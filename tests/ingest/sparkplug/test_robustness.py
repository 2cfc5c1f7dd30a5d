"""Garbage, odd publishers, identities and the host's STATE (its MQTT Will)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.types import DataType
from shopfloor.ingest.sparkplug import SparkplugHost
from shopfloor.registry.credentials import DeviceIdentity
from tests.edge.sparkplug.helpers import Broker

from .helpers import HostHarness, Publisher, history

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000
MS = 1_000_000


async def test_garbage_is_counted_and_the_loop_goes_on(
    harness: HostHarness, publisher: Publisher, platform: Platform, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 0), M(T0, "x", dt.DOUBLE, 1.0, alias=1)])
    publisher.send("spBv1.0/plant1/NBIRTH/ext1", nb.encode(include_dtypes=True))
    publisher.send("spBv1.0/plant1/NDATA/ext1", b"\xff\xff\xff\xff not protobuf")
    publisher.send("spBv1.0/plant1/XDATA/ext1", b"")  # no such message type
    publisher.send("spBv1.0/nobody/NBIRTH/ext1", nb.encode(include_dtypes=True))  # no tenant
    publisher.send(
        "spBv1.0/plant1/NDATA/ext1",
        spb.NData(T0 + 1, 1, [M(T0 + 1, None, dt.DOUBLE, 2.0, alias=1)]).encode(),
    )
    node = await harness.messages("plant1/ext1", 3)
    assert node["errors"] == {"garbage_payload": 1}
    assert "not a Sparkplug B payload" in node["last_error"]
    assert [v for _, v, _, _ in history(platform, "ext1/x")] == [1.0, 2.0]
    errors = harness.host.status()["errors"]
    assert errors["bad_topic"] == 1
    assert errors["no_tenant"] == 1
    assert errors["garbage_payload"] == 1
    assert harness.node("nobody/ext1")["tenant"] is None


async def test_odd_publishers(
    harness: HostHarness, publisher: Publisher, platform: Platform, spb: Any
) -> None:
    dt, M = spb.DataType, spb.Metric
    nb = spb.NBirth(
        T0,
        0,
        [
            M(T0, "bdSeq", dt.UINT64, 0),
            M(T0, "Inputs/A", dt.DOUBLE, 1.0, alias=1),
            M(T0, "Inputs.A", dt.DOUBLE, 2.0, alias=2),  # maps onto the same signal name
            M(T0, "dup", dt.INT32, 3, alias=1),  # alias 1 taken
            M(T0, "When", dt.DATETIME, None, alias=4, is_null=True),  # not supported
        ],
    )
    publisher.send("spBv1.0/plant1/NBIRTH/odd", nb.encode(include_dtypes=True))
    # Data that names a metric differently from its birth but with a known alias: the alias wins.
    nd = spb.NData(T0 + 1, 1, [M(T0 + 1, "inputs/a", dt.DOUBLE, 5.0, alias=1)])
    publisher.send("spBv1.0/plant1/NDATA/odd", nd.encode(include_dtypes=True))
    # The metric without alias is reachable by name.
    nd = spb.NData(T0 + 2, 2, [M(T0 + 2, "dup", dt.INT32, 6)])
    publisher.send("spBv1.0/plant1/NDATA/odd", nd.encode(include_dtypes=True))
    node = await harness.messages("plant1/odd", 3)
    assert node["errors"] == {
        "name_clash": 1,
        "duplicate_alias": 1,
        "unsupported_metric": 1,
        "name_mismatch": 1,
    }
    assert node["rebirths_requested"] == 0
    tid = platform.registry.get_tenant("plant1").id
    assert {s.name: s.data_type for s in platform.registry.list_signals(tid, "odd")} == {
        "Inputs.A": DataType.FLOAT,
        "dup": DataType.INT,
    }
    assert [v for _, v, _, _ in history(platform, "odd/Inputs.A")] == [1.0, 5.0]
    assert [v for _, v, _, _ in history(platform, "odd/dup")] == [3.0, 6.0]


async def test_state_online_retained_and_offline_as_will(
    harness: HostHarness, broker: Broker
) -> None:
    online = _retained_state(broker.port)
    assert online is not None
    assert online["online"] is True
    assert isinstance(online["timestamp"], int)
    # For a clean shutdown (which drops the Will) the same offline STATE is published.
    assert orjson.loads(harness.host.offline()[1]) == {
        "online": False,
        "timestamp": online["timestamp"],
    }

    # The connection dies without DISCONNECT: the broker publishes the Will, retained, and
    # Sparkplug 3.0 wants its timestamp to be the one the online STATE carried.
    harness.client.loop_stop()
    sock = harness.client.socket()
    assert sock is not None
    sock.close()
    offline = None
    for _ in range(50):
        offline = _retained_state(broker.port)
        if offline is not None and offline["online"] is False:
            break
    assert offline == {"online": False, "timestamp": online["timestamp"]}


def _retained_state(port: int) -> dict[str, Any] | None:
    """The retained STATE of host "shopfloor" as a new subscriber sees it (None: none)."""
    got: list[dict[str, Any]] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(orjson.loads(msg.payload))
        done.set()

    c.on_connect = lambda c, *_a: c.subscribe("spBv1.0/STATE/shopfloor", qos=1)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        done.wait(0.5)  # a retained message comes at once after SUBACK; none: nothing retained
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got else None


async def test_identity_must_be_the_edge_node_of_the_topic(tmp_path: Path, spb: Any) -> None:
    platform = Platform(Settings(data_dir=tmp_path, commit_interval_ms=2.0))
    try:
        acme, _ = platform.registry.create_tenant("plant1")
        other, _ = platform.registry.create_tenant("other")
        sent: list[str] = []

        async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
            sent.append(topic)

        host = SparkplugHost(platform, publish)
        dt, M = spb.DataType, spb.Metric
        nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 0), M(T0, "x", dt.DOUBLE, 1.0, alias=1)])
        raw = nb.encode(include_dtypes=True)

        def ident(tenant_id: int, sparkplug: tuple[str, str] | None) -> DeviceIdentity:
            return DeviceIdentity(tenant_id, "t", 1, "gwX", False, frozenset(), sparkplug, 1)

        await host.handle("spBv1.0/plant1/NBIRTH/gw1", raw, ident(acme.id, ("plant1", "gw9")))
        await host.handle("spBv1.0/plant1/NBIRTH/gw1", raw, ident(other.id, ("plant1", "gw1")))
        await host.handle("spBv1.0/plant1/NBIRTH/gw1", raw, ident(acme.id, None))
        assert host.status()["nodes"]["plant1/gw1"]["errors"] == {"not_authorised": 3}
        assert platform.registry.list_devices(acme.id) == []

        await host.handle("spBv1.0/plant1/NBIRTH/gw1", raw, ident(acme.id, ("plant1", "gw1")))
        assert [v for _, v, _, _ in history(platform, "gw1/x")] == [1.0]
        assert sent == []
    finally:
        platform.close()


async def test_seq_wraps_after_255_and_births_honour_auto_registration(
    tmp_path: Path, spb: Any
) -> None:
    platform = Platform(Settings(data_dir=tmp_path, commit_interval_ms=2.0))
    try:
        platform.registry.create_tenant("plant1")
        locked, _ = platform.registry.create_tenant("locked", auto_register_signals=False)
        sent: list[str] = []

        async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
            sent.append(topic)

        host = SparkplugHost(platform, publish)
        dt, M = spb.DataType, spb.Metric
        nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 0), M(T0, "x", dt.DOUBLE, 0.0, alias=1)])
        await host.handle("spBv1.0/plant1/NBIRTH/n", nb.encode(include_dtypes=True))
        for i, seq in enumerate([*range(1, 256), 0, 1], start=1):
            nd = spb.NData(T0 + i, seq, [M(T0 + i, None, dt.DOUBLE, float(i), alias=1)])
            await host.handle("spBv1.0/plant1/NDATA/n", nd.encode())
        node = host.status()["nodes"]["plant1/n"]
        assert node["errors"] == {}
        assert node["seq"] == 1
        assert len(history(platform, "n/x")) == 258
        assert sent == []

        # A tenant that turned auto-registration off gets no new signals from a birth.
        await host.handle("spBv1.0/locked/NBIRTH/n", nb.encode(include_dtypes=True))
        node = host.status()["nodes"]["locked/n"]
        assert node["errors"] == {"birth_rejected": 1}
        assert "auto-registration is off" in node["last_error"]
        assert platform.registry.list_signals(locked.id) == []
    finally:
        platform.close()


async def test_the_tenant_quota_applies_to_sparkplug_data(
    harness: HostHarness, publisher: Publisher, platform: Platform, spb: Any
) -> None:
    """Sparkplug data counts against the tenant's stored-points quota like any ingest: data
    over the quota is counted as refused and not stored; data within it is."""
    from shopfloor.security.limits import LimitOverrides

    tenant = platform.registry.get_tenant("plant1")
    platform.limits.set_limits(tenant.id, LimitOverrides(stored_points_max=2))
    dt, M = spb.DataType, spb.Metric
    nb = spb.NBirth(T0, 0, [M(T0, "bdSeq", dt.UINT64, 0), M(T0, "x", dt.DOUBLE, 1.0, alias=1)])
    publisher.send("spBv1.0/plant1/NBIRTH/q1", nb.encode(include_dtypes=True))
    for seq in (1, 2, 3):
        nd = spb.NData(T0 + seq, seq, [M(T0 + seq, None, dt.DOUBLE, float(seq + 1), alias=1)])
        publisher.send("spBv1.0/plant1/NDATA/q1", nd.encode())
    node = await harness.messages("plant1/q1", 4)
    assert [v for _, v, _, _ in history(platform, "q1/x")] == [1.0, 2.0]
    assert node["errors"] == {"quota_exceeded": 2}
    assert "quota" in node["last_error"]
