"""The numpy codec, without a server: every data type and order against struct's encoding."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.modbus import DeviceCodec, EncodeError, PointConfig, plan_reads

from .helpers import ORDERS, registers_of, string_registers

# Values that show a wrong byte or word order: every byte differs, sign bits are set, and the
# 64-bit ones are exact in float64 but need all four registers right.
VALUES: dict[str, list[Any]] = {
    "int16": [-12345, 32767, -32768, 0],
    "uint16": [54321, 65535, 1],
    "int32": [-123456789, 2**31 - 1, -(2**31)],
    "uint32": [3_000_000_000, 2**32 - 1, 0x01020304],
    "int64": [-(2**62) - 1024, 2**53 - 1, -1],
    "uint64": [2**63 + 2048, 0x0102030405060708 & ~0xFF, 7],
    "float32": [-1234.5, 3.0e38, 1.0e-38, 0.15625],
    "float64": [math.pi, -1.0e300, 5e-324],
}


def codec(points: list[PointConfig]) -> DeviceCodec:
    return DeviceCodec(points, plan_reads(points, max_gap=200))


def test_the_four_orders_of_a_float32() -> None:
    # 1.0f is 0x3F800000: A=3F B=80 C=00 D=00
    expect = {
        ("big", "big"): [0x3F80, 0x0000],
        ("big", "little"): [0x0000, 0x3F80],
        ("little", "big"): [0x803F, 0x0000],
        ("little", "little"): [0x0000, 0x803F],
    }
    for (bo, wo), regs in expect.items():
        p = PointConfig(
            name="x", table="holding", address=0, type="float32", byte_order=bo, word_order=wo
        )
        c = codec([p])
        assert c.encode(0, 1.0) == regs
        values, quality, text = c.decode([regs])
        assert values[0] == 1.0
        assert quality[0] == GOOD
        assert text is None


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("dtype", sorted(VALUES))
def test_every_type_and_order_decodes_and_encodes(
    dtype: str, byte_order: str, word_order: str
) -> None:
    vals = VALUES[dtype]
    points, regs, addr = [], [], 0
    for i, v in enumerate(vals):
        p = PointConfig(
            name=f"p{i}",
            table="holding",
            address=addr,
            type=dtype,
            byte_order=byte_order,
            word_order=word_order,
        )
        points.append(p)
        r = registers_of(v, dtype, byte_order, word_order)
        regs += r
        addr += len(r)
    c = codec(points)
    values, quality, _ = c.decode([regs])
    expected = (
        np.array(vals, dtype=np.float64)
        if dtype != "float32"
        else np.array(vals, dtype=np.float32).astype(np.float64)
    )
    np.testing.assert_array_equal(values, expected)
    assert (quality == GOOD).all()
    for i, v in enumerate(vals):
        assert c.encode(i, v) == registers_of(v, dtype, byte_order, word_order)


def test_scale_and_offset() -> None:
    points = [
        PointConfig(name="t", table="input", address=0, type="int16", scale=0.1, offset=-40),
        PointConfig(name="p", table="input", address=1, type="uint32", scale=0.001),
        PointConfig(name="raw", table="input", address=3),
    ]
    c = codec(points)
    regs = [*registers_of(-215, "int16"), *registers_of(123456, "uint32"), 17]
    values, _, _ = c.decode([regs])
    np.testing.assert_allclose(values, [-215 * 0.1 - 40, 123.456, 17])
    assert c.encode(0, -61.5) == registers_of(-215, "int16")
    assert c.encode(1, 123.456) == registers_of(123456, "uint32")
    assert c.encode(0, -61.54) == registers_of(-215, "int16")  # rounds to the nearest step


@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_strings(byte_order: str) -> None:
    points = [
        PointConfig(
            name="serial",
            table="holding",
            address=0,
            type="string",
            length=10,
            byte_order=byte_order,
        ),
        PointConfig(
            name="odd", table="holding", address=5, type="string", length=3, byte_order=byte_order
        ),
        PointConfig(name="n", table="holding", address=7),
    ]
    c = codec(points)
    regs = (
        string_registers("SN-4711", 10, byte_order) + string_registers("abc", 3, byte_order) + [5]
    )
    values, quality, text = c.decode([regs])
    assert text == ("SN-4711", "abc", None)
    assert np.isnan(values[:2]).all()
    assert values[2] == 5
    assert (quality == GOOD).all()
    assert c.encode(0, "SN-4711") == string_registers("SN-4711", 10, byte_order)
    assert c.encode(1, "abc") == string_registers("abc", 3, byte_order)
    # trailing blanks (a space-padded device) are dropped, inner ones kept
    values, _, text = c.decode([[*string_registers("A B   ", 10, byte_order), 0, 0, 0]])
    assert text is not None
    assert text[0] == "A B"
    with pytest.raises(EncodeError, match="holds 3 bytes"):
        c.encode(1, "abcd")
    with pytest.raises(EncodeError, match="string point"):
        c.encode(1, 12)


def test_bits_in_registers_and_bit_tables() -> None:
    points = [
        PointConfig(name="b0", table="holding", address=3, type="bool", bit=0),
        PointConfig(name="b15", table="holding", address=3, type="bool", bit=15),
        PointConfig(name="b7", table="holding", address=3, type="bool", bit=7),
        PointConfig(name="word", table="holding", address=3),
        PointConfig(name="c2", table="coil", address=2),
        PointConfig(name="c5", table="coil", address=5),
        PointConfig(name="d0", table="discrete", address=0),
    ]
    c = codec(points)
    assert [b.table for b in c.plan.blocks] == ["holding", "coil", "discrete"]
    coils = [True, False, False, False, False, False, False, False]  # from 2; 8 like the wire
    values, _, _ = c.decode([[0x8001], coils, [True]])
    np.testing.assert_array_equal(values, [1, 1, 0, 0x8001, 1, 0, 1])
    assert c.encode(0, True) is True
    assert c.encode(4, 0) is False
    with pytest.raises(EncodeError, match="bool point"):
        c.encode(4, 2)


def test_a_failed_request_takes_only_its_own_points() -> None:
    points = [
        PointConfig(name="a", table="holding", address=0),
        PointConfig(name="s", table="holding", address=1, type="string", length=2),
        PointConfig(name="far", table="holding", address=500, type="float32"),
        PointConfig(name="c", table="coil", address=0),
    ]
    c = codec([*points])
    c = DeviceCodec(points, plan_reads(points, max_gap=8))
    assert len(c.plan.blocks) == 3
    values, quality, text = c.decode([[1, 0x4142], None, [True]])
    assert values[0] == 1
    assert np.isnan(values[2])
    assert values[3] == 1
    np.testing.assert_array_equal(quality, [GOOD, GOOD, BAD, GOOD])
    assert text == (None, "AB", None, None)
    values, quality, text = c.decode([None, None, None])
    assert np.isnan(values).all()
    assert (quality == BAD).all()
    assert text == (None,) * 4


def test_answers_must_match_the_plan() -> None:
    c = codec([PointConfig(name="a", table="holding", address=0, type="int32")])
    with pytest.raises(ValueError, match="1 values, 2 asked"):
        c.decode([[1]])
    with pytest.raises(ValueError, match="2 answers for 1 requests"):
        c.decode([[1, 2], [3]])


@pytest.mark.parametrize(
    ("dtype", "value", "says"),
    [
        ("int16", 40000, "outside int16"),
        ("uint16", -1, "outside uint16"),
        ("uint64", 2**64, "outside uint64"),
        ("int32", "12", "got str"),
        ("int32", True, "got bool"),
        ("float32", 1e39, "does not fit"),
        ("int16", float("nan"), "not a finite number"),
    ],
)
def test_values_that_cannot_be_written(dtype: str, value: Any, says: str) -> None:
    c = codec([PointConfig(name="x", table="holding", address=0, type=dtype)])
    with pytest.raises(EncodeError, match=says):
        c.encode(0, value)


def test_big_integers_are_written_exactly() -> None:
    c = codec([PointConfig(name="x", table="holding", address=0, type="uint64")])
    assert c.encode(0, 2**64 - 1) == [0xFFFF] * 4
    assert c.encode(0, np.uint64(2**63 + 1)) == registers_of(2**63 + 1, "uint64")
