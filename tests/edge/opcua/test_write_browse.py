"""Writes with read-back, and browsing the address space into a config section."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from shopfloor.edge.connectors.opcua import OpcUaConfig, OpcUaConnector
from shopfloor.edge.connectors.opcua.browse import TagEntry, browse, browse_to_yaml, tags_to_config
from shopfloor.edge.model import WriteRequest

from .conftest import Collector, ServerProcess, free_port

pytestmark = pytest.mark.anyio

SETPOINTS = ("SpeedSetpoint", "TargetCount", "Enabled", "Recipe", "Gain")


def setpoint_config(url: str) -> OpcUaConfig:
    nodes = [{"node_id": f"ns=2;s=Setpoints.{n}", "signal": n} for n in SETPOINTS]
    nodes.append({"node_id": "ns=2;s=dev000.v0000", "signal": "readonly"})
    return OpcUaConfig.model_validate(
        {
            "endpoint": url,
            "publishing_interval_ms": 100,
            "devices": [{"name": "line1", "nodes": nodes}],
        }
    )


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[tuple[OpcUaConnector, Collector]]:
    sink = Collector()
    conn = OpcUaConnector("plc", setpoint_config(url), sink)
    task = asyncio.create_task(conn.run())
    try:
        assert await sink.wait_for(lambda: conn.status()["connected"], 20)
        yield conn, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("signal", "value", "expected"),
    [
        ("SpeedSetpoint", 72.5, 72.5),
        ("SpeedSetpoint", 80, 80.0),  # an int for a Double node is written as a Double
        ("TargetCount", 250, 250),
        ("TargetCount", 300.0, 300),  # a whole float for an Int32 node
        ("Enabled", True, True),
        ("Enabled", "off", False),
        ("Recipe", "B-200", "B-200"),
        ("Gain", 0.1, 0.1),  # Float: compared at single precision
    ],
)
async def test_write_with_read_back(
    server: ServerProcess, signal: str, value: Any, expected: Any
) -> None:
    async with connected(server.url) as (conn, sink):
        result = await conn.write(WriteRequest("w1", "line1", signal, value))
        assert result.ok, result.message
        assert result.id == "w1"
        assert result.message == "written and read back"
        if isinstance(expected, float):
            assert math.isclose(result.read_back, expected, rel_tol=1e-6)
        else:
            assert result.read_back == expected
            assert type(result.read_back) is type(expected)

        # the subscription reports the new value too
        def seen() -> bool:
            for r in sink.readings:
                for i, s in enumerate(r.signals):
                    if s != signal:
                        continue
                    got = r.text[i] if r.text and r.text[i] is not None else r.values[i]
                    if isinstance(expected, str) and got == expected:
                        return True
                    if not isinstance(expected, str) and math.isclose(
                        float(got), float(expected), rel_tol=1e-6
                    ):
                        return True
            return False

        assert await sink.wait_for(seen, 10)


async def test_write_errors_are_results_not_exceptions(server: ServerProcess) -> None:
    async with connected(server.url) as (conn, _):
        cases = [
            (WriteRequest("a", "line1", "TargetCount", 2**40), "outside Int32"),
            (WriteRequest("b", "line1", "TargetCount", 1.5), "not a whole number"),
            (WriteRequest("c", "line1", "Enabled", "maybe"), "not a Boolean"),
            (WriteRequest("d", "line1", "nope", 1), "no signal 'nope' on device 'line1'"),
            (WriteRequest("e", "other", "Recipe", "x"), "no signal 'Recipe' on device 'other'"),
            # asyncua refuses a write to a read-only node as BadUserAccessDenied
            (WriteRequest("f", "line1", "readonly", 1.0), "BadUserAccessDenied"),
        ]
        for req, message in cases:
            result = await conn.write(req)
            assert not result.ok, req
            assert result.id == req.id
            assert message in result.message, (req, result.message)
        # the session survived all of that
        ok = await conn.write(WriteRequest("g", "line1", "Recipe", "C-1", confirm=False))
        assert ok.ok, ok.message
        assert ok.read_back is None


async def test_write_when_not_connected() -> None:
    conn = OpcUaConnector("plc", setpoint_config(f"opc.tcp://127.0.0.1:{free_port()}"), Collector())
    result = await conn.write(WriteRequest("x", "line1", "Recipe", "A"))
    assert not result.ok
    assert "not connected" in result.message


async def test_browse_finds_variables_with_paths_and_types(server: ServerProcess) -> None:
    tags = await browse(server.url)
    by_path = {t.browse_path: t for t in tags}
    plant = [t for t in tags if t.browse_path.startswith("Plant/")]
    assert len(plant) == 100
    assert by_path["Plant/dev003/v0007"] == TagEntry(
        "ns=2;s=dev003.v0007", "Plant/dev003/v0007", "Double", "r"
    )
    assert by_path["Setpoints/TargetCount"].data_type == "Int32"
    assert by_path["Setpoints/Enabled"].data_type == "Boolean"
    assert by_path["Setpoints/Recipe"].data_type == "String"
    assert by_path["Setpoints/Gain"].data_type == "Float"
    assert by_path["Setpoints/Recipe"].access == "rw"
    assert all(not t.node_id.startswith("i=") for t in tags)  # standard nodes left out
    assert len(await browse(server.url, max_depth=2, include_standard=True)) > 10
    # depth and count bounds
    shallow = await browse(server.url, max_depth=2)
    assert {t.browse_path for t in shallow} == {f"Setpoints/{n}" for n in SETPOINTS}
    assert len(await browse(server.url, max_tags=7)) == 7
    sub = await browse(server.url, root="ns=2;s=dev001")
    assert [t.browse_path for t in sub] == [f"v{v:04d}" for v in range(10)]


async def test_tags_to_config_loads_and_subscribes(server: ServerProcess) -> None:
    tags = await browse(server.url)
    section = tags_to_config(tags, server.url)
    cfg = OpcUaConfig.model_validate(section)
    names = {d.name: d for d in cfg.devices}
    assert set(names) == {"Setpoints", *(f"Plant.dev{d:03d}" for d in range(10))}
    assert [n.signal for n in names["Plant.dev002"].nodes] == [f"v{v:04d}" for v in range(10)]
    # the generated section works as it is
    sink = Collector()
    conn = OpcUaConnector("plc", cfg, sink)
    task = asyncio.create_task(conn.run())
    try:
        assert await sink.wait_for(lambda: conn.status()["items_reported"] == 105, 20)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_tags_to_config_unique_signals_and_skips_non_values() -> None:
    tags = [
        TagEntry("ns=1;i=1", "A/B/temp", "Double", "r"),
        TagEntry("ns=1;i=2", "A/B/temp", "Double", "r"),
        TagEntry("ns=1;i=3", "A/B/odd name!", "Int16", "rw"),
        TagEntry("ns=1;i=4", "A/B/blob", "ByteString", "r"),
        TagEntry("ns=1;i=5", "top", "Boolean", "r"),
    ]
    section = tags_to_config(tags, "opc.tcp://h:4840")
    devices = {d["name"]: [n["signal"] for n in d["nodes"]] for d in section["devices"]}
    assert devices == {"A.B": ["temp", "temp_2", "odd_name"], "root": ["top"]}


def test_browse_to_yaml_is_a_loadable_section(server: ServerProcess) -> None:
    text = browse_to_yaml(server.url, max_depth=2)
    assert text.startswith("# opcua connector section: 5 variables")
    cfg = OpcUaConfig.model_validate(yaml.safe_load(text))
    assert [n.node_id for n in cfg.devices[0].nodes] == [f"ns=2;s=Setpoints.{n}" for n in SETPOINTS]


def test_browse_to_yaml_unreachable_names_the_endpoint() -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"cannot browse {url}"):
        browse_to_yaml(url, timeout_s=2)
