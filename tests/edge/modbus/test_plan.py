"""Read plans: as few requests as the PDU limits allow, every point inside one request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shopfloor.edge.connectors.modbus import Block, PointConfig, plan_reads


def pt(address: int, table: str = "holding", **kw: Any) -> PointConfig:
    return PointConfig(
        name=f"{table}{address}{kw.get('bit', '')}", table=table, address=address, **kw
    )


def test_adjacent_registers_make_one_request() -> None:
    plan = plan_reads([pt(0), pt(1, type="int32"), pt(3, type="float64"), pt(7)])
    assert plan.blocks == (Block("holding", 0, 8),)
    assert plan.point_block == (0, 0, 0, 0)
    assert plan.registers == 8


def test_small_gaps_are_read_through_large_ones_split() -> None:
    points = [pt(0), pt(5), pt(14), pt(40)]
    assert plan_reads(points, max_gap=8).blocks == (
        Block("holding", 0, 15),
        Block("holding", 40, 1),
    )
    assert plan_reads(points, max_gap=0).blocks == (
        Block("holding", 0, 1),
        Block("holding", 5, 1),
        Block("holding", 14, 1),
        Block("holding", 40, 1),
    )
    assert len(plan_reads(points, max_gap=100).blocks) == 1


def test_order_of_the_table_does_not_matter() -> None:
    points = [pt(40), pt(5), pt(0), pt(14)]
    plan = plan_reads(points, max_gap=8)
    assert plan.blocks == (Block("holding", 0, 15), Block("holding", 40, 1))
    assert plan.point_block == (1, 0, 0, 0)


def test_pdu_limit_125_registers() -> None:
    plan = plan_reads([pt(a) for a in range(300)])
    assert plan.blocks == (
        Block("holding", 0, 125),
        Block("holding", 125, 125),
        Block("holding", 250, 50),
    )
    # a two-register value never straddles two requests
    plan = plan_reads([pt(2 * i, type="float32") for i in range(100)])
    assert [b.count for b in plan.blocks] == [124, 76]
    assert plan.point_block[61] == 0
    assert plan.point_block[62] == 1


def test_device_limit_below_the_protocol_limit() -> None:
    plan = plan_reads([pt(a) for a in range(100)], max_registers=32)
    assert [b.count for b in plan.blocks] == [32, 32, 32, 4]


def test_bits_2000_per_request_and_their_own_gap() -> None:
    coils = [pt(a, "coil") for a in range(0, 4100, 2)]
    plan = plan_reads(coils, max_bit_gap=64)
    assert [b.count for b in plan.blocks] == [1999, 1999, 99]
    plan = plan_reads([pt(0, "discrete"), pt(60, "discrete"), pt(200, "discrete")], max_bit_gap=64)
    assert plan.blocks == (Block("discrete", 0, 61), Block("discrete", 200, 1))


def test_tables_never_mix_and_come_in_a_fixed_order() -> None:
    points = [pt(0, "discrete"), pt(0, "coil"), pt(0, "input"), pt(0, "holding"), pt(1, "holding")]
    plan = plan_reads(points)
    assert [b.table for b in plan.blocks] == ["holding", "input", "coil", "discrete"]
    assert plan.point_block == (3, 2, 1, 0, 0)
    assert (plan.registers, plan.bits) == (3, 2)


def test_points_sharing_a_register() -> None:
    bits = [pt(10, type="bool", bit=b) for b in range(16)]
    plan = plan_reads([*bits, pt(10, type="int16")])
    assert plan.blocks == (Block("holding", 10, 1),)


def test_random_tables_keep_the_invariants() -> None:
    rng = np.random.default_rng(1)
    types = ["uint16", "int32", "float64", "string"]
    for _ in range(200):
        points = []
        for i in range(int(rng.integers(1, 60))):
            t = str(rng.choice(types))
            kw: dict[str, Any] = {"type": t}
            if t == "string":
                kw["length"] = int(rng.integers(1, 40))
            points.append(
                PointConfig(name=f"p{i}", table="holding", address=int(rng.integers(0, 600)), **kw)
            )
        gap, limit = int(rng.integers(0, 20)), int(rng.integers(20, 126))
        plan = plan_reads(points, max_gap=gap, max_registers=limit)
        for p, k in zip(points, plan.point_block, strict=True):
            b = plan.blocks[k]
            assert b.start <= p.address
            assert p.address + p.width <= b.end
        for b in plan.blocks:
            assert 1 <= b.count <= limit
        for a, b in zip(plan.blocks, plan.blocks[1:], strict=False):
            assert a.start < b.start  # sorted (they overlap only where points overlap)
            # two neighbours were not merged: too far apart, or together over the limit
            first = min(
                p.address
                for p, k in zip(points, plan.point_block, strict=True)
                if plan.blocks[k] == b
            )
            assert first - a.end > gap or max(b.end, a.end) - a.start > limit
        # no register read that no point needs, beyond the allowed gaps
        for b in plan.blocks:
            used = np.zeros(b.count, dtype=bool)
            for p, k in zip(points, plan.point_block, strict=True):
                if plan.blocks[k] == b:
                    used[p.address - b.start : p.address - b.start + p.width] = True
            assert used[0]
            assert used[-1]
            unused = longest = 0
            for u in used:
                unused = 0 if u else unused + 1
                longest = max(longest, unused)
            assert longest <= gap


def test_a_point_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="over the limit"):
        plan_reads([pt(0, type="string", length=80)], max_registers=20)
