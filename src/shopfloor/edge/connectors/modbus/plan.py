"""Read plans: a device's points coalesced into as few read requests as the protocol allows.

Points of one register table are sorted by address and swept once: a point joins the current
request when the registers between them (the gap) are at most ``max_gap`` and the request stays
within the PDU limit (125 registers, 2000 coils or discrete inputs, or the device's own lower
limit); otherwise it starts a new request. Every point lies wholly inside one request, so a
failed request takes exactly its own points with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shopfloor.edge.connectors.modbus.config import DeviceConfig, PointConfig

__all__ = ["TABLES", "Block", "ReadPlan", "plan_device", "plan_reads"]

# Tables in the order their requests are sent.
TABLES = ("holding", "input", "coil", "discrete")


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: str
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def is_bits(self) -> bool:
        return self.table in ("coil", "discrete")


@dataclass(frozen=True)
class ReadPlan:
    """The requests of one poll and, per point (in configuration order), its request index."""

    blocks: tuple[Block, ...]
    point_block: tuple[int, ...]

    @property
    def registers(self) -> int:
        return sum(b.count for b in self.blocks if not b.is_bits)

    @property
    def bits(self) -> int:
        return sum(b.count for b in self.blocks if b.is_bits)


def plan_reads(
    points: Sequence[PointConfig],
    *,
    max_gap: int = 8,
    max_bit_gap: int = 64,
    max_registers: int = 125,
    max_bits: int = 2000,
) -> ReadPlan:
    """Coalesce ``points`` into requests; see the module docstring for the rule."""
    blocks: list[Block] = []
    point_block = [-1] * len(points)
    for table in TABLES:
        members = sorted(
            (i for i, p in enumerate(points) if p.table == table),
            key=lambda i: (points[i].address, -points[i].width),
        )
        if not members:
            continue
        bits = table in ("coil", "discrete")
        gap, limit = (max_bit_gap, max_bits) if bits else (max_gap, max_registers)
        start = end = -1
        for i in members:
            p = points[i]
            if p.width > limit:
                raise ValueError(
                    f"point {p.name!r} needs {p.width} registers, over the limit {limit}"
                )
            p_end = p.address + p.width
            if start >= 0 and p.address - end <= gap and max(end, p_end) - start <= limit:
                end = max(end, p_end)
            else:
                if start >= 0:
                    blocks.append(Block(table, start, end - start))
                start, end = p.address, p_end
            point_block[i] = len(blocks)
        blocks.append(Block(table, start, end - start))
    return ReadPlan(tuple(blocks), tuple(point_block))


def plan_device(device: DeviceConfig) -> ReadPlan:
    """The plan for a device, with its own gap and request-size limits."""
    return plan_reads(
        device.points,
        max_gap=device.max_gap,
        max_bit_gap=device.max_bit_gap,
        max_registers=device.max_registers_per_read,
        max_bits=device.max_bits_per_read,
    )
