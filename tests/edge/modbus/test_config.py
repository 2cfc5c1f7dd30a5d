"""The configuration model: what it accepts, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shopfloor.edge.connector import connector_class
from shopfloor.edge.connectors.modbus import ModbusConfig, ModbusConnector

POINT = {"name": "temp", "table": "holding", "address": 0, "type": "float32"}


def cfg(point: dict[str, Any] | None = None, **conn: Any) -> dict[str, Any]:
    c = {
        "name": "line1",
        "transport": "tcp",
        "host": "10.0.0.5",
        "devices": [{"name": "press", "points": [point or POINT]}],
    }
    c.update(conn)
    return {"connections": [c]}


def error(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        ModbusConfig.model_validate(data)
    e = info.value.errors()[0]
    return ".".join(str(p) for p in e["loc"]), e["msg"]


def test_defaults_and_both_transports() -> None:
    c = ModbusConfig.model_validate(
        {
            "connections": [
                cfg()["connections"][0],
                {
                    "name": "rs485",
                    "transport": "rtu",
                    "serial_port": "/dev/ttyUSB0",
                    "baudrate": 9600,
                    "devices": [
                        {"name": "meter", "unit_id": 7, "points": [POINT]},
                        {"name": "drive", "unit_id": 8, "points": [POINT]},
                    ],
                },
            ]
        }
    )
    tcp, rtu = c.connections
    assert (tcp.port, tcp.address, tcp.devices[0].unit_id) == (502, "10.0.0.5:502", 1)
    assert (rtu.parity, rtu.stopbits, rtu.bytesize, rtu.address) == ("E", 1, 8, "/dev/ttyUSB0")
    d = tcp.devices[0]
    assert (d.period_s, d.timeout_s, d.max_gap, d.max_registers_per_read) == (1.0, 0.5, 8, 125)
    p = d.points[0]
    assert (p.byte_order, p.word_order, p.scale, p.offset, p.width) == ("big", "big", 1.0, 0.0, 2)
    assert [name for name, _ in [(dev.name, c) for c, dev in c.devices()]] == [
        "press",
        "meter",
        "drive",
    ]


def test_default_types() -> None:
    c = ModbusConfig.model_validate(
        cfg(
            devices=[
                {
                    "name": "d",
                    "points": [
                        {"name": "r", "table": "input", "address": 1},
                        {"name": "c", "table": "coil", "address": 2},
                    ],
                }
            ]
        )
    )
    r, co = c.connections[0].devices[0].points
    assert (r.data_type, co.data_type, co.writable, r.writable) == ("uint16", "bool", True, False)


def test_entry_point_names_the_connector() -> None:
    assert connector_class("modbus") is ModbusConnector
    assert ModbusConnector.config_model is ModbusConfig


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        (cfg({**POINT, "colour": "red"}), "connections.0.devices.0.points.0.colour", "Extra"),
        (cfg({**POINT, "table": "holdings"}), "connections.0.devices.0.points.0.table", "holding"),
        (cfg({**POINT, "type": "float16"}), "connections.0.devices.0.points.0.type", "float32"),
        (cfg({**POINT, "address": 70000}), "connections.0.devices.0.points.0.address", "65535"),
        (cfg({**POINT, "type": "string"}), "connections.0.devices.0.points.0", "needs length"),
        (cfg({**POINT, "type": "bool"}), "connections.0.devices.0.points.0", "needs bit"),
        (cfg({**POINT, "bit": 3}), "connections.0.devices.0.points.0", "bit only applies"),
        (cfg({**POINT, "length": 4}), "connections.0.devices.0.points.0", "length only applies"),
        (cfg({**POINT, "scale": 0}), "connections.0.devices.0.points.0", "scale must not be 0"),
        (
            cfg({**POINT, "address": 65535}),
            "connections.0.devices.0.points.0",
            "past the last address",
        ),
        (
            cfg({"name": "c", "table": "coil", "address": 0, "type": "int16"}),
            "connections.0.devices.0.points.0",
            "type must be bool",
        ),
        (
            cfg(
                {
                    "name": "s",
                    "table": "holding",
                    "address": 0,
                    "type": "bool",
                    "bit": 1,
                    "scale": 2,
                }
            ),
            "connections.0.devices.0.points.0",
            "do not apply",
        ),
        (cfg(host=None), "connections.0", "needs host"),
        (cfg(transport="serial"), "connections.0.transport", "'tcp' or 'rtu'"),
        (cfg(baudrate=9600), "connections.0", "baudrate do(es) not apply to a tcp"),
        (
            cfg(transport="rtu", host=None, serial_port="/dev/ttyS0", port=5020),
            "connections.0",
            "port do(es) not apply to a rtu",
        ),
        (cfg(transport="rtu", host=None), "connections.0", "needs serial_port"),
        (cfg(reconnect_min_s=5, reconnect_max_s=1), "connections.0", "reconnect_max_s"),
        (cfg(devices=[]), "connections.0.devices", "at least 1"),
        ({"connections": []}, "connections", "at least 1"),
        ({"connection": []}, "connections", "Field required"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], where: str, says: str) -> None:
    loc, msg = error(data)
    assert loc == where, msg
    assert says in msg


def test_duplicates_are_errors() -> None:
    dev = {"name": "d", "points": [POINT]}
    assert (
        "point name 'temp' appears twice"
        in error(cfg(devices=[{**dev, "points": [POINT, POINT]}]))[1]
    )
    assert "unit_id 1 appears twice" in error(cfg(devices=[dev, {**dev, "name": "e"}]))[1]
    conn = cfg()["connections"][0]
    twice = {"connections": [conn, {**conn, "name": "other"}]}
    assert "device name 'press' appears twice" in error(twice)[1]
    assert "connection name 'line1'" in error({"connections": [conn, conn]})[1]


def test_a_point_wider_than_one_read_is_an_error() -> None:
    big = {"name": "s", "table": "holding", "address": 0, "type": "string", "length": 40}
    where, msg = error(cfg(devices=[{"name": "d", "max_registers_per_read": 16, "points": [big]}]))
    assert where == "connections.0.devices.0"
    assert "takes 20 registers, more than max_registers_per_read (16)" in msg


def test_public_names_manifest_and_quality_scale() -> None:
    import json
    from pathlib import Path

    import yaml

    import shopfloor.edge.connectors.modbus as pkg

    for name in pkg.__all__:
        assert hasattr(pkg, name), name
    assert {"ModbusConnector", "ModbusConfig", "plan_reads", "DeviceCodec"} <= set(pkg.__all__)
    folder = Path(pkg.__file__).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["domain"] == ModbusConnector.domain == "modbus"
    rules = yaml.safe_load((folder / "quality_scale.yaml").read_text())["rules"]
    assert {r["status"] for r in rules.values()} <= {"done", "todo", "exempt"}
    assert all(r["comment"] for r in rules.values())
