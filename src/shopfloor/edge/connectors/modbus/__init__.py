"""Modbus TCP and RTU connector (pymodbus): declarative points, coalesced reads, shared links.

See docs/connectors/modbus.md. The connector class is registered in the
``shopfloor.connectors`` entry-point group as ``modbus``.
"""

from shopfloor.edge.connectors.modbus.codec import DeviceCodec, EncodeError
from shopfloor.edge.connectors.modbus.config import (
    ConnectionConfig,
    DeviceConfig,
    ModbusConfig,
    PointConfig,
)
from shopfloor.edge.connectors.modbus.connector import ModbusConnector, ModbusDeviceError
from shopfloor.edge.connectors.modbus.link import ModbusLink
from shopfloor.edge.connectors.modbus.plan import Block, ReadPlan, plan_device, plan_reads

__all__ = [
    "Block",
    "ConnectionConfig",
    "DeviceCodec",
    "DeviceConfig",
    "EncodeError",
    "ModbusConfig",
    "ModbusConnector",
    "ModbusDeviceError",
    "ModbusLink",
    "PointConfig",
    "ReadPlan",
    "plan_device",
    "plan_reads",
]
