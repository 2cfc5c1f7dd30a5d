"""Commands through the edge into a real OPC UA server, and the host's rebirth request (NCMD).

POST /api/v1/devices/{device}/commands -> the platform's Sparkplug host -> DCMD on a real
Mosquitto -> a real edge gateway (OPC UA connector, Sparkplug uplink) -> an asyncua server
running in this process, so the test reads the variable from the server's own address space
rather than through another client. The gateway writes, reads back and answers with a DDATA,
which the host matches to the write.

The second test starts the platform after the gateway was born, as a host restarted while its
edge nodes kept running: the first DDATA it sees is of a node it has no birth for, so it sends
NCMD "Node Control/Rebirth", and the gateway answers with a fresh NBIRTH (seq 0, the bdSeq of
its MQTT session's Will) and DBIRTH, which the host accepts.

Without Mosquitto the tests skip locally and fail under CI=true (the broker fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import ua
from asyncua.common.node import Node

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.errors import NotFound
from shopfloor.core.sparkplug import payload as sp_payload
from shopfloor.edge.config import parse_edge_config
from shopfloor.edge.connectors.opcua._ua import Server, node_id
from shopfloor.edge.runtime import Gateway
from shopfloor.edge.uplinks.sparkplug import SparkplugUplink
from shopfloor.ingest.sparkplug import SparkplugHost
from shopfloor.security.audit import AuditFilter
from shopfloor.security.roles import Role
from tests.edge.sparkplug.helpers import Broker, Received, Recorder
from tests.edge.sparkplug_gateway_helpers import GROUP, NODE, edge_doc
from tests.services import free_port

from .helpers import history

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct-horse-battery-9"  # meets the default password policy (tests/security)
DEVICE = "boiler-01"  # the gateway's device
BOILER = f"{NODE}.{DEVICE}"  # its registry name
COMMANDS = "POST /api/v1/devices/{name}/commands"  # the audit action of the route


@dataclass
class OpcUaBoiler:
    """An asyncua server with a ``Boiler`` object: a writable Double setpoint, a writable
    Int32 count and a read-only Double temperature."""

    server: Server
    url: str
    setpoint: Node
    count: Node
    temp: Node


@contextlib.asynccontextmanager
async def opcua_boiler() -> AsyncIterator[OpcUaBoiler]:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/shopfloor/boiler"
    server = Server()
    await server.init()
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:shopfloor:tests:boiler")
    boiler = await server.nodes.objects.add_object(node_id("Boiler", idx), "Boiler")

    async def variable(name: str, value: Any, vtype: ua.VariantType, writable: bool) -> Node:
        node = await boiler.add_variable(
            node_id(f"Boiler.{name}", idx), name, ua.Variant(value, vtype)
        )
        if writable:
            await node.set_writable()  # without it the node is CurrentRead only
        return node

    setpoint = await variable("Setpoint", 20.0, ua.VariantType.Double, True)
    count = await variable("Count", 100, ua.VariantType.Int32, True)
    temp = await variable("Temp", 21.5, ua.VariantType.Double, False)
    async with server:
        yield OpcUaBoiler(server, url, setpoint, count, temp)


def opcua_section(url: str) -> dict[str, Any]:
    nodes = [
        {"node_id": "ns=2;s=Boiler.Setpoint", "signal": "setpoint"},
        {"node_id": "ns=2;s=Boiler.Count", "signal": "count"},
        {"node_id": "ns=2;s=Boiler.Temp", "signal": "temp"},
    ]
    return {
        "type": "opcua",
        "name": "ua",
        "endpoint": url,
        "publishing_interval_ms": 50,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "devices": [{"name": DEVICE, "nodes": nodes}],
    }


def token_headers(platform: Platform, tenant_id: int, role: Role, name: str) -> dict[str, str]:
    """A new user holding ``role`` in the tenant and the headers of an API token of theirs."""
    user = platform.auth.create_user(tenant_id, name, PASSWORD, [(role, None)])
    _, token = platform.auth.issue_token(user.id, "tests", None)
    return {"Authorization": f"Bearer {token}"}


async def until(cond: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def external_platform(tmp_path: Path, broker: Broker) -> Platform:
    return Platform(
        Settings(
            data_dir=tmp_path / "data",
            mqtt_mode="external",
            mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
            commit_interval_ms=2.0,
        )
    )


def stored(platform: Platform, signal: str, value: float) -> bool:
    """Whether a good point of boiler-01's ``signal`` with ``value`` is in the historian."""
    try:
        points = history(platform, f"{BOILER}/{signal}", GROUP)
    except NotFound:  # the signal is not registered yet
        return False
    return any(v == value and q == 0 for _, v, _, q in points)


def born_at(platform: Platform, host: SparkplugHost, tenant_id: int) -> Callable[[], bool]:
    """Whether the host knows boiler-01 with all three signals of its DBIRTH."""

    def born() -> bool:
        if not host.knows(tenant_id, BOILER):
            return False
        signals = {s.name for s in platform.registry.list_signals(tenant_id, BOILER)}
        return {"setpoint", "count", "temp"} <= signals

    return born


def test_setpoint_written_into_an_opcua_server_through_the_edge(
    broker: Broker, tmp_path: Path
) -> None:
    """An operator's write of 42.5 to the Double setpoint returns ok, read back 42.5, via
    Sparkplug, and the server's variable holds 42.5; a viewer gets 403 and writes nothing. A
    whole number for the Int32 node is written as an Int32; a fraction for it, a text for a
    number and a write to a read-only node fail with a message saying why and change nothing.
    Every POST is in the audit log with the caller and its outcome."""

    async def scenario() -> None:
        platform = external_platform(tmp_path, broker)
        tenant, _ = platform.registry.create_tenant(GROUP)  # the group's tenant, by name
        operator = token_headers(platform, tenant.id, Role.OPERATOR, "op")
        viewer = token_headers(platform, tenant.id, Role.VIEWER, "view")
        assert platform.mqtt is not None
        await platform.mqtt.start()
        host = platform.mqtt.sparkplug
        assert isinstance(host, SparkplugHost)
        app = create_app(platform=platform)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        try:
            async with opcua_boiler() as ua_server:
                cfg = parse_edge_config(
                    edge_doc(tmp_path, broker.port, [opcua_section(ua_server.url)])
                )
                gw = Gateway(cfg)
                task = asyncio.create_task(gw.run())
                try:
                    await asyncio.wait_for(gw.ready.wait(), 10)
                    await until(born_at(platform, host, tenant.id), 15, "the DBIRTH of boiler-01")
                    url = f"/api/v1/devices/{BOILER}/commands"

                    # the acceptance: written through the edge, read back, in the server
                    body: dict[str, Any] = {"signal": "setpoint", "value": 42.5, "timeout_s": 5}
                    r = await http.post(url, json=body, headers=operator)
                    assert r.status_code == 200, r.text
                    out = r.json()
                    assert out["ok"] is True, out
                    assert out["via"] == "sparkplug"
                    assert out["read_back"] == 42.5
                    assert out["value"] == 42.5
                    assert out["matches"] is True
                    assert await ua_server.setpoint.read_value() == 42.5

                    # a viewer may not send commands, and nothing reaches the server
                    r = await http.post(url, json={**body, "value": 7.0}, headers=viewer)
                    assert r.status_code == 403, r.text
                    assert await ua_server.setpoint.read_value() == 42.5

                    # the metric is a Double (the gateway's default); the node an Int32: a whole
                    # number is converted to the node's type by the connector
                    count: dict[str, Any] = {"signal": "count", "value": 250, "timeout_s": 5}
                    r = await http.post(url, json=count, headers=operator)
                    assert r.status_code == 200, r.text
                    out = r.json()
                    assert out["ok"] is True, out
                    assert out["read_back"] == 250
                    assert out["matches"] is True
                    dv = await ua_server.count.read_data_value()
                    assert dv.Value is not None
                    assert dv.Value.Value == 250
                    assert dv.Value.VariantType == ua.VariantType.Int32

                    # ... a fraction cannot be: refused by the gateway with its reason
                    r = await http.post(url, json={**count, "value": 1.5}, headers=operator)
                    assert r.status_code == 200, r.text
                    out = r.json()
                    assert out["ok"] is False, out
                    assert out["read_back"] is None
                    assert out["matches"] is False
                    assert "1.5 is not a whole number for Int32" in out["message"]
                    assert "ns=2;s=Boiler.Count" in out["message"]
                    assert await ua_server.count.read_value() == 250

                    # a text for a number never leaves the platform
                    r = await http.post(url, json={**body, "value": "high"}, headers=operator)
                    assert r.status_code == 422, r.text
                    assert "takes a number" in r.text
                    assert await ua_server.setpoint.read_value() == 42.5

                    # a read-only node: the server refuses, the gateway says so
                    temp = {"signal": "temp", "value": 99.0, "timeout_s": 5}
                    r = await http.post(url, json=temp, headers=operator)
                    assert r.status_code == 200, r.text
                    out = r.json()
                    assert out["ok"] is False, out
                    assert out["read_back"] is None
                    assert out["matches"] is False
                    assert "ns=2;s=Boiler.Temp" in out["message"]
                    assert "BadUserAccessDenied" in out["message"]
                    assert await ua_server.temp.read_value() == 21.5

                    # four DCMDs went out and all were answered (the 403 and 422 sent none)
                    assert host.status()["writes"] == {"sent": 4, "answered": 4}
                    # the value read back is stored as a point (the host answers the write
                    # before it stores the answering DDATA, hence the wait)
                    await until(lambda: stored(platform, "setpoint", 42.5), 5, "42.5 stored")
                finally:
                    gw.request_stop()
                    await asyncio.wait_for(task, 20)

            # the audit log: every POST, in order, with its caller and outcome
            records = platform.audit.records(
                AuditFilter(tenant_id=tenant.id, action=COMMANDS), limit=None
            )
            got = [(r.actor, r.outcome, r.details.get("status")) for r in records]
            op, view = "token:tests@op", "token:tests@view"  # the token's name @ its user
            assert got == [
                (op, "ok", 200),
                (view, "denied", 403),
                (op, "ok", 200),
                (op, "ok", 200),  # the refused write: the call itself succeeded
                (op, "failed", 422),
                (op, "ok", 200),
            ]
            assert {r.object for r in records} == {f"name={BOILER}"}
            # and what was commanded, with the device's answer: a refusal is not an "ok"
            commands = platform.audit.records(
                AuditFilter(tenant_id=tenant.id, action="device.command"), limit=None
            )
            seen = [
                (r.outcome, r.details["signal"], r.details["value"], r.details.get("matches"))
                for r in commands
            ]
            assert seen == [
                ("ok", "setpoint", 42.5, True),
                ("ok", "count", 250, True),
                ("failed", "count", 1.5, False),  # the device refused it
                ("failed", "setpoint", "high", None),  # refused before sending (422)
                ("failed", "temp", 99.0, False),  # a read-only node
            ], seen
            assert "takes a number" in commands[3].details["error"]
            assert all(r.details["via"] == "sparkplug" for r in commands if "via" in r.details)
        finally:
            await http.aclose()
            await platform.mqtt.stop()
            platform.close()

    asyncio.run(scenario())


def _kinds(messages: list[Received]) -> list[str]:
    return [m.kind for m in messages]


def test_host_rebirth_request_answered_by_the_gateway(
    broker: Broker, recorder: Recorder, spb: Any, tmp_path: Path
) -> None:
    """The platform starts after the gateway's births. Its first DDATA makes the host send one
    NCMD "Node Control/Rebirth" = true; the gateway answers on the same MQTT session with
    NBIRTH seq 0 and the bdSeq of its first birth (the Will's is unchanged, so it may not
    change), then DBIRTH seq 1 with the current values. The host takes them: node and device
    online, the birth values stored, and a write by the rebirth's aliases reaches the server."""

    async def scenario() -> None:
        platform = external_platform(tmp_path, broker)
        tenant, _ = platform.registry.create_tenant(GROUP)
        assert platform.mqtt is not None
        started = False
        try:
            async with opcua_boiler() as ua_server:
                cfg = parse_edge_config(
                    edge_doc(tmp_path, broker.port, [opcua_section(ua_server.url)])
                )
                gw = Gateway(cfg)
                task = asyncio.create_task(gw.run())
                try:
                    await asyncio.wait_for(gw.ready.wait(), 10)
                    await recorder.until(
                        lambda ms: "DBIRTH" in _kinds(ms), 15, "the gateway's first DBIRTH"
                    )
                    # the host now starts and has missed the births
                    before = len(recorder.messages)
                    await platform.mqtt.start()
                    started = True
                    host = platform.mqtt.sparkplug
                    assert isinstance(host, SparkplugHost)
                    # its own online STATE coming back shows its subscription is in place
                    await until(lambda: host.status()["messages"] >= 1, 10, "the host's STATE")
                    assert f"{GROUP}/{NODE}" not in host.status()["nodes"]
                    # a change on the server: the gateway's DDATA is the first the host sees
                    await ua_server.setpoint.write_value(ua.Variant(30.0, ua.VariantType.Double))
                    await recorder.until(
                        lambda ms: (
                            "NBIRTH" in _kinds(ms[before:]) and "DBIRTH" in _kinds(ms[before:])
                        ),
                        15,
                        "the births answering the rebirth request",
                    )
                    await until(born_at(platform, host, tenant.id), 15, "the host's acceptance")

                    msgs = list(recorder.messages)
                    ncmds = [m for m in msgs if m.kind == "NCMD"]
                    assert [m.topic for m in ncmds] == [f"spBv1.0/{GROUP}/NCMD/{NODE}"]
                    ncmd = spb.NCmd.decode(ncmds[0].payload)
                    assert {m.name: m.value for m in ncmd.metrics} == {"Node Control/Rebirth": True}
                    assert not ncmds[0].retain

                    nbirths = [i for i, m in enumerate(msgs) if m.kind == "NBIRTH"]
                    assert len(nbirths) == 2, _kinds(msgs)
                    first, again = (spb.NBirth.decode(msgs[i].payload) for i in nbirths)
                    bd_first = {m.name: m.value for m in first.metrics}["bdSeq"]
                    metrics = {m.name: m.value for m in again.metrics}
                    # same MQTT session, same Will: the bdSeq stays, the seq starts over
                    assert metrics["bdSeq"] == bd_first
                    assert metrics["Node Control/Rebirth"] is False
                    assert (first.seq, again.seq) == (0, 0)
                    assert "NDEATH" not in _kinds(msgs)  # no new session was needed
                    i = nbirths[1]
                    # the node's messages before it had run on past the first birth's seq
                    last_ddata = next(m for m in reversed(msgs[:i]) if m.kind == "DDATA")
                    assert sp_payload.decode(last_ddata.payload).seq > 0
                    dbirth_msg = msgs[i + 1]
                    assert dbirth_msg.topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}"
                    dbirth = spb.DBirth.decode(dbirth_msg.payload)
                    assert dbirth.seq == 1
                    values = {m.name: m.value for m in dbirth.metrics}
                    assert values == {"setpoint": 30.0, "count": 100.0, "temp": 21.5}

                    uplink = gw.uplink
                    assert isinstance(uplink, SparkplugUplink)
                    assert uplink.status()["sessions"] == 1
                    assert uplink.status()["births_sent"] == 2

                    node = host.status()["nodes"][f"{GROUP}/{NODE}"]
                    assert node["online"] is True
                    assert node["born"] is True
                    assert node["bdSeq"] == bd_first
                    assert node["births"] == 1
                    assert node["rebirths_requested"] == 1
                    assert node["errors"].get("data_before_birth", 0) >= 1
                    assert node["devices"][DEVICE]["online"] is True
                    assert node["devices"][DEVICE]["signals"] == 3
                    # the DBIRTH's values are stored (just after the birth was registered)
                    await until(lambda: stored(platform, "setpoint", 30.0), 5, "30.0 stored")
                    await until(lambda: stored(platform, "temp", 21.5), 5, "21.5 stored")

                    # the aliases of the rebirth are the ones the host writes by
                    result = await host.write(tenant.id, BOILER, "setpoint", 31.5, 5.0)
                    assert result.ok, result.message
                    assert result.read_back == 31.5
                    assert result.matches
                    assert await ua_server.setpoint.read_value() == 31.5
                finally:
                    gw.request_stop()
                    await asyncio.wait_for(task, 20)
                # the clean stop's NDEATH ends the same session: the bdSeq of both its births
                ndeaths = await recorder.count("NDEATH", 1)
                assert [spb.NDeath.decode(m.payload).bd_seq_metric.value for m in ndeaths] == [
                    bd_first
                ]
        finally:
            if started:
                await platform.mqtt.stop()
            platform.close()

    asyncio.run(scenario())
