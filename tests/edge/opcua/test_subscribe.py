"""Subscriptions against a real asyncua server: values, source timestamps, quality, batching."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from shopfloor.core.quality import GOOD
from shopfloor.edge.connector import connector_class
from shopfloor.edge.connectors.opcua import OpcUaConfig, OpcUaConnector

from .conftest import Collector, ServerProcess, running_server

pytestmark = pytest.mark.anyio


def plant_config(url: str, devices: int, per_device: int, **extra: Any) -> OpcUaConfig:
    return OpcUaConfig.model_validate(
        {
            "endpoint": url,
            "publishing_interval_ms": 100,
            "devices": [
                {
                    "name": f"dev{d:03d}",
                    "nodes": [
                        {"node_id": f"ns=2;s=dev{d:03d}.v{v:04d}", "signal": f"v{v}"}
                        for v in range(per_device)
                    ],
                }
                for d in range(devices)
            ],
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running(conn: OpcUaConnector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(conn.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_public_names() -> None:
    import shopfloor.edge.connectors.opcua as pkg

    for name in pkg.__all__:
        assert hasattr(pkg, name), name
    assert {"OpcUaConnector", "OpcUaConfig", "browse", "browse_to_yaml"} <= set(pkg.__all__)


def test_manifest_and_quality_scale() -> None:
    import json
    from pathlib import Path

    import yaml

    import shopfloor.edge.connectors.opcua as pkg

    folder = Path(pkg.__file__).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["domain"] == OpcUaConnector.domain
    rules = yaml.safe_load((folder / "quality_scale.yaml").read_text())["rules"]
    assert {r["status"] for r in rules.values()} <= {"done", "todo", "exempt"}
    assert all(r["comment"] for r in rules.values())


def test_registered_as_entry_point() -> None:
    assert connector_class("opcua") is OpcUaConnector
    assert OpcUaConnector.domain == "opcua"
    assert OpcUaConnector.config_model is OpcUaConfig


async def test_values_source_timestamps_and_quality(server: ServerProcess) -> None:
    sink = Collector()
    conn = OpcUaConnector("plc", plant_config(server.url, 10, 10), sink)
    started_ns = time.time_ns()
    async with running(conn):
        # every item reports, then at least two further changes (0.5 s apart) arrive
        assert await sink.wait_for(lambda: conn.status()["items_reported"] == 100, 20)
        n_before = len(sink.readings)
        assert await sink.wait_for(lambda: len(sink.readings) >= n_before + 20, 10)
        status = conn.status()
    assert status["connected"] is True
    assert status["session_state"] == "connected"
    assert status["subscribed_items"] == 100
    assert status["notifications_received"] >= 200
    assert status["last_error"] is None
    readings = sink.readings
    assert {r.device for r in readings} == {f"dev{d:03d}" for d in range(10)}
    for r in readings:
        assert r.source_ts is True
        assert set(r.signals) <= {f"v{v}" for v in range(10)}
        assert len(set(r.signals)) == len(r.signals)  # one value per signal per publish
        np.testing.assert_array_equal(r.quality, GOOD)
        # the simulator writes cycle * 1000 + (device * 10 + var) % 1000
        d = int(r.device[3:])
        var = np.array([int(s[1:]) for s in r.signals])
        later = r.values >= 1000  # the initial 0.0 comes before the first cycle
        np.testing.assert_array_equal(r.values[later] % 1000, (d * 10 + var)[later])
        # source timestamps: set by the server (one per cycle), not the gateway's clock now
        assert (r.ts_ns > started_ns - 120 * 10**9).all()
        assert (r.ts_ns <= time.time_ns()).all()
    # a changed value carries the timestamp of the cycle that wrote it: one per cycle
    cycles = {int(r.values[0] // 1000): int(r.ts_ns[0]) for r in readings if r.values[0] >= 1000}
    by_cycle: dict[int, set[int]] = {}
    for r in readings:
        for v, t in zip(r.values, r.ts_ns, strict=True):
            if v >= 1000:
                by_cycle.setdefault(int(v // 1000), set()).add(int(t))
    assert len(cycles) >= 2
    assert all(len(ts) == 1 for ts in by_cycle.values())
    stamps = sorted(next(iter(ts)) for ts in by_cycle.values())
    gaps = np.diff(stamps) / 1e9
    assert ((gaps > 0.3) & (gaps < 1.5)).all(), gaps  # the 0.5 s server cycle


async def test_batches_within_server_limit_and_all_items_report() -> None:
    # the server states MaxMonitoredItemsPerCall = 150: 1,200 items need 8+ calls
    with running_server(
        "--devices", "12", "--per-device", "100", "--period", "0.5", "--max-items-per-call", "150"
    ) as srv:
        sink = Collector()
        cfg = plant_config(srv.url, 12, 100, items_per_subscription=500)
        conn = OpcUaConnector("plc", cfg, sink)
        async with running(conn):
            assert await sink.wait_for(lambda: conn.status()["items_reported"] == 1200, 30)
            status = conn.status()
    assert status["server_limits"]["max_monitored_items_per_call"] == 150
    assert status["monitored_items_per_call"] == 150
    assert status["subscriptions"] == 3  # 500 + 500 + 200
    assert status["create_calls"] == 4 + 4 + 2
    assert status["subscribed_items"] == 1200
    # one reading per device per publish response, never one per item
    assert len(sink.readings) < status["notifications_received"] / 10


async def test_unknown_nodes_are_reported_not_fatal(server: ServerProcess) -> None:
    cfg = OpcUaConfig.model_validate(
        {
            "endpoint": server.url,
            "publishing_interval_ms": 100,
            "devices": [
                {
                    "name": "m1",
                    "nodes": [
                        {"node_id": "ns=2;s=dev000.v0000", "signal": "ok"},
                        {"node_id": "ns=2;s=no.such.node", "signal": "missing"},
                    ],
                }
            ],
        }
    )
    sink = Collector()
    conn = OpcUaConnector("plc", cfg, sink)
    async with running(conn):
        assert await sink.wait_for(lambda: conn.status()["items_reported"] == 1, 20)
        status = conn.status()
    assert status["subscribed_items"] == 1
    assert status["failed_items"] == {"ns=2;s=no.such.node": "BadNodeIdUnknown"}
    assert "1 nodes not subscribed" in status["last_error"]
    assert {s for r in sink.readings for s in r.signals} == {"ok"}


async def test_absolute_deadband_filters_small_changes(server: ServerProcess) -> None:
    # values step by 1000 per cycle: a deadband of 5000 passes about every fifth change only
    cfg = plant_config(server.url, 1, 2)
    dev = cfg.devices[0]
    nodes = [dev.nodes[0], dev.nodes[1].model_copy(update={"deadband": 5000.0})]
    cfg = cfg.model_copy(update={"devices": [dev.model_copy(update={"nodes": nodes})]})
    sink = Collector()
    conn = OpcUaConnector("plc", cfg, sink)
    async with running(conn):

        def count(sig: str) -> int:
            return sum(sig in r.signals for r in sink.readings)

        assert await sink.wait_for(lambda: count("v0") >= 12, 20)
        status = conn.status()
    assert status["subscribed_items"] == 2
    assert count("v1") <= count("v0") / 2


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"endpoint": "http://x"}, "opc.tcp://"),
        ({"surprise": 1}, "surprise"),
        ({"username": "u"}, "both username and password"),
        ({"security": {"policy": "Basic256Sha256", "mode": "Sign"}}, "certificate and private_key"),
        ({"security": {"mode": "Sign"}}, "needs policy Basic256Sha256"),
    ],
)
def test_config_errors_are_clear(patch: dict[str, Any], message: str) -> None:
    base = {
        "endpoint": "opc.tcp://127.0.0.1:4840",
        "devices": [{"name": "m", "nodes": [{"node_id": "i=1", "signal": "s"}]}],
    }
    with pytest.raises(ValueError, match=message):
        OpcUaConfig.model_validate({**base, **patch})


def test_duplicate_names_rejected() -> None:
    node = {"node_id": "i=1", "signal": "s"}
    with pytest.raises(ValueError, match="signal 's' appears twice"):
        OpcUaConfig.model_validate(
            {"endpoint": "opc.tcp://h:1", "devices": [{"name": "m", "nodes": [node, node]}]}
        )
    with pytest.raises(ValueError, match="device names appear twice: m"):
        OpcUaConfig.model_validate(
            {"endpoint": "opc.tcp://h:1", "devices": [{"name": "m", "nodes": [node]}] * 2}
        )


async def test_ten_thousand_variables_every_item_reports() -> None:
    with running_server("--devices", "100", "--per-device", "100", "--period", "1.0") as srv:
        sink = Collector()
        conn = OpcUaConnector(
            "plc", plant_config(srv.url, 100, 100, publishing_interval_ms=500), sink
        )
        async with running(conn):
            assert await sink.wait_for(lambda: conn.status()["items_reported"] == 10_000, 60)
            status = conn.status()
    assert status["subscribed_items"] == 10_000
    assert status["subscriptions"] == 4  # 2,500 items each
    assert status["failed_items"] == {}
    seen = {(r.device, s) for r in sink.readings for s in r.signals}
    assert len(seen) == 10_000
    assert {d for d, _ in seen} == {f"dev{d:03d}" for d in range(100)}
