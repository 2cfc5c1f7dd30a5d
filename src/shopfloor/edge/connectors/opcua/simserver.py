"""A simulated OPC UA server (asyncua) for tests, benchmarks and demos of the OPC UA connector.

Layout under Objects: ``Plant/dev000 .. devNNN`` objects, each with ``v0000 ..`` Double
variables (node ids ``ns=2;s=dev000.v0000``), and a ``Setpoints`` object with writable
variables of several types. Every ``period_s`` all plant variables change at once, with one
source timestamp per cycle as a PLC scan would give them; the server counts what it wrote per
cycle, so a client can be compared with what the server itself managed (the ceiling).

Building is fast because the nodes go into the address space in one bulk ``add_nodes`` call
per device instead of one service call per node, and because every device is its own parent:
asyncua checks each new reference against all references of the parent, so 10,000 children
of one object cost O(n^2) (that, not the protocol, made the naive build take ~38 s).

Run as a process: ``python -m shopfloor.edge.connectors.opcua.simserver --port P ...``; it
prints ``READY <port>`` on stdout once it serves and, with ``--stats``, rewrites a JSON file
of per-cycle write counts every cycle and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.monitored_item_service import MonitoredItemValues

from shopfloor.edge.connectors.opcua._ua import AttributeIds, ObjectIds, Server, data_value, node_id

__all__ = ["SETPOINTS", "SimServer", "build_server", "main", "plant_node_id"]

NAMESPACE = "urn:shopfloor:simserver"
# name -> (variant type, initial value); all writable.
SETPOINTS: dict[str, tuple[ua.VariantType, Any]] = {
    "SpeedSetpoint": (ua.VariantType.Double, 50.0),
    "TargetCount": (ua.VariantType.Int32, 100),
    "Enabled": (ua.VariantType.Boolean, False),
    "Recipe": (ua.VariantType.String, "A-100"),
    "Gain": (ua.VariantType.Float, 1.5),
}
_RW = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.CurrentWrite.mask
_RO = ua.AccessLevel.CurrentRead.mask


def _share_written_values() -> None:
    """Skip asyncua's deep copy of every value a monitored item sees, in this process only.

    asyncua deep-copies each DataValue per monitored item in case the writer mutates it later;
    with 10,000 items a second that copy alone took ~40% of the server's CPU, so a cycle
    outran its second. This server builds a new DataValue for every write and never touches it
    again, so sharing it is safe here (it would not be for an arbitrary server application).
    """

    def set_current(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val

    MonitoredItemValues.set_current_datavalue = set_current  # type: ignore[method-assign]


def plant_node_id(device: int, var: int) -> str:
    return f"ns=2;s=dev{device:03d}.v{var:04d}"


class _PasswordUsers:
    """Accepts exactly one username/password pair; anything else is refused (BadUserAccessDenied)."""

    def __init__(self, username: str, password: str) -> None:
        self._pair = (username, password)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if (username, password) == self._pair:
            return User(role=UserRole.User, name=username)
        return None


def _variable(
    parent: ua.NodeId, nodeid: ua.NodeId, name: str, vtype: ua.VariantType, value: Any, access: int
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, nodeid.NamespaceIndex)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = node_id(ObjectIds.HasComponent)
    item.TypeDefinition = node_id(ObjectIds.BaseDataVariableType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.DataType = node_id(vtype.value)
    attrs.Value = ua.Variant(value, vtype)
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.AccessLevel = access
    attrs.UserAccessLevel = access
    item.NodeAttributes = attrs
    return item


def _object(
    parent: ua.NodeId, nodeid: ua.NodeId, name: str, folder: bool = False
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, nodeid.NamespaceIndex)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = node_id(ObjectIds.Organizes)
    item.TypeDefinition = node_id(ObjectIds.FolderType if folder else ObjectIds.BaseObjectType)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    item.NodeAttributes = attrs
    return item


@dataclass
class SimServer:
    server: Server
    devices: int
    per_device: int
    period_s: float
    plant_ids: list[ua.NodeId] = field(default_factory=list)
    cycles: list[tuple[int, int]] = field(default_factory=list)  # (source ts ns, writes ok)
    build_s: float = 0.0

    async def run_updates(self, stats: Path | None = None) -> None:
        """Change every plant variable once per period, on a fixed grid, until cancelled."""
        aspace = self.server.iserver.aspace
        loop = asyncio.get_running_loop()
        tick = loop.time()
        cycle = 0
        while True:
            tick += self.period_s
            await asyncio.sleep(max(0.0, tick - loop.time()))
            cycle += 1
            now = datetime.now(UTC)
            ts_ns = round(now.timestamp() * 1e6) * 1000  # what a client makes of the stamp
            ok = 0
            for i, nodeid in enumerate(self.plant_ids):
                dv = data_value(
                    ua.Variant(float(cycle * 1000 + i % 1000), ua.VariantType.Double), now
                )
                if (await aspace.write_attribute_value(nodeid, AttributeIds.Value, dv)).is_good():
                    ok += 1
                if i % 500 == 499:  # let the server answer publish requests within a cycle
                    await asyncio.sleep(0)
            self.cycles.append((ts_ns, ok))
            if stats is not None:
                self.dump(stats)
            if loop.time() > tick + self.period_s:  # overran: keep the grid, skip missed ticks
                tick = loop.time()

    def dump(self, stats: Path) -> None:
        tmp = stats.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"build_s": self.build_s, "items": len(self.plant_ids), "cycles": self.cycles}
            )
        )
        os.replace(tmp, stats)


async def build_server(
    port: int,
    *,
    devices: int = 10,
    per_device: int = 10,
    period_s: float = 1.0,
    certificate: Path | None = None,
    private_key: Path | None = None,
    user: tuple[str, str] | None = None,
    max_items_per_call: int | None = None,
) -> SimServer:
    """A started-ready (not yet started) server; call ``await sim.server.start()``."""
    started = time.perf_counter()
    _share_written_values()
    server = Server(user_manager=_PasswordUsers(*user) if user else None)  # type: ignore[arg-type]
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/shopfloor/sim")
    server.set_server_name("Shopfloor simulated OPC UA server")
    if certificate is not None and private_key is not None:
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(private_key))
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
        )
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if user is not None:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    idx = await server.register_namespace(NAMESPACE)
    assert idx == 2, idx
    if max_items_per_call is not None:
        limit = server.get_node(
            node_id(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
        )
        await limit.write_value(ua.Variant(max_items_per_call, ua.VariantType.UInt32))

    nms = server.iserver.node_mgt_service
    objects = node_id(ObjectIds.ObjectsFolder)
    plant = node_id("Plant", idx)
    setp = node_id("Setpoints", idx)
    items = [_object(objects, plant, "Plant", folder=True), _object(objects, setp, "Setpoints")]
    for name, (vtype, value) in SETPOINTS.items():
        items.append(_variable(setp, node_id(f"Setpoints.{name}", idx), name, vtype, value, _RW))
    _check(nms.add_nodes(items))

    sim = SimServer(server, devices, per_device, period_s)
    for d in range(devices):
        dev = node_id(f"dev{d:03d}", idx)
        batch = [_object(plant, dev, f"dev{d:03d}")]
        for v in range(per_device):
            nodeid = node_id(f"dev{d:03d}.v{v:04d}", idx)
            batch.append(_variable(dev, nodeid, f"v{v:04d}", ua.VariantType.Double, 0.0, _RO))
            sim.plant_ids.append(nodeid)
        _check(nms.add_nodes(batch))
    sim.build_s = time.perf_counter() - started
    return sim


def _check(results: list[ua.AddNodesResult]) -> None:
    for r in results:
        r.StatusCode.check()


async def _serve(args: argparse.Namespace) -> None:
    user = tuple(args.user.split(":", 1)) if args.user else None
    sim = await build_server(
        args.port,
        devices=args.devices,
        per_device=args.per_device,
        period_s=args.period,
        certificate=args.cert,
        private_key=args.key,
        user=user,
        max_items_per_call=args.max_items_per_call,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with sim.server:
        print(f"READY {args.port} build_s={sim.build_s:.2f}", flush=True)
        updates = asyncio.create_task(sim.run_updates(args.stats))
        await stop.wait()
        updates.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await updates
    if args.stats is not None:
        sim.dump(args.stats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--per-device", type=int, default=10)
    p.add_argument("--period", type=float, default=1.0, help="seconds between value changes")
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--user", help="USER:PASSWORD; when given, only this login is accepted")
    p.add_argument("--max-items-per-call", type=int)
    p.add_argument("--stats", type=Path, help="JSON file of per-cycle write counts")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
