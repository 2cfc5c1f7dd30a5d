"""The Modbus connector's configuration: connections, the devices behind them, their points.

A connection is one TCP socket (to a device or to a Modbus TCP gateway) or one RTU serial line;
several devices (unit ids) may share it, and requests over one connection are serialised. Each
device has a declarative table of points; the connector turns that table into as few read
requests as the protocol allows (:mod:`.plan`) and decodes the answers with numpy (:mod:`.codec`).

Every model forbids unknown keys, so a misspelt option is an error naming the field, not a
silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DATA_TYPES",
    "MAX_BITS_PER_READ",
    "MAX_REGISTERS_PER_READ",
    "ConnectionConfig",
    "DeviceConfig",
    "ModbusConfig",
    "PointConfig",
]

# The PDU limits of one read request (Modbus application protocol, 6.1-6.4).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
# A string of 250 bytes fills 125 registers, the most one read returns.
MAX_STRING_LENGTH = 2 * MAX_REGISTERS_PER_READ

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bool",
    "string",
]
Order = Literal["big", "little"]

# Registers taken by each fixed-width data type.
DATA_TYPES: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "bool": 1,
}

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s/][^/]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointConfig(_Strict):
    """One data point: where it lives on the device and how its registers become a value."""

    name: Name = Field(description="Signal name, unique within the device.")
    table: Table = Field(description="Register table: holding, input, coil or discrete.")
    address: int = Field(ge=0, le=65535, description="Zero-based address of the first register.")
    type: DataType | None = Field(
        None,
        description="Data type; default uint16 for registers, bool for coils and discrete inputs.",
    )
    bit: int | None = Field(
        None,
        ge=0,
        le=15,
        description="For type bool in a register: the bit, 0 = least significant.",
    )
    length: int | None = Field(
        None, ge=1, le=MAX_STRING_LENGTH, description="For type string: the length in bytes."
    )
    byte_order: Order = Field("big", description="Order of the two bytes within each register.")
    word_order: Order = Field(
        "big", description="Order of the registers of a multi-register value."
    )
    scale: float = Field(1.0, description="value = raw * scale + offset.")
    offset: float = 0.0
    unit: str | None = Field(None, description="Engineering unit, e.g. degC or kW.")

    @property
    def data_type(self) -> str:
        if self.type is not None:
            return self.type
        return "bool" if self.is_bit_table else "uint16"

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("coil", "discrete")

    @property
    def writable(self) -> bool:
        return self.table in ("holding", "coil")

    @property
    def width(self) -> int:
        """Registers (or, in a bit table, bits) the point occupies."""
        if self.is_bit_table:
            return 1
        if self.data_type == "string":
            assert self.length is not None
            return (self.length + 1) // 2
        return DATA_TYPES[self.data_type]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        dt = self.data_type
        if self.is_bit_table:
            if dt != "bool":
                raise ValueError(f"a {self.table} point is a bit: type must be bool, not {dt}")
            if self.bit is not None:
                raise ValueError(f"bit only applies to a bool in a register, not to a {self.table}")
        elif dt == "bool" and self.bit is None:
            raise ValueError("a bool in a register needs bit (0-15)")
        elif dt != "bool" and self.bit is not None:
            raise ValueError(f"bit only applies to type bool, not {dt}")
        if dt == "string":
            if self.length is None:
                raise ValueError("a string point needs length (bytes)")
        elif self.length is not None:
            raise ValueError(f"length only applies to type string, not {dt}")
        if dt in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset do not apply to type {dt}")
        if self.scale == 0.0:
            raise ValueError("scale must not be 0")
        if self.address + self.width > 65536:
            raise ValueError(
                f"address {self.address} + {self.width} registers runs past the last address 65535"
            )
        return self


class DeviceConfig(_Strict):
    """One Modbus device (unit id) and its points, polled by one DevicePoller."""

    name: Name = Field(description="Device name, unique within the connector.")
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id.")
    period_s: float = Field(1.0, gt=0, le=86400, description="Poll period.")
    timeout_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Timeout of one request; keep it short on a shared connection, because a "
        "device that does not answer holds the line this long.",
    )
    backoff_max_s: float = Field(
        60.0, gt=0, description="Longest wait between retries of a dead device."
    )
    max_gap: int = Field(
        8,
        ge=0,
        le=MAX_REGISTERS_PER_READ,
        description="Unused registers one read may span to join two groups of points.",
    )
    max_bit_gap: int = Field(
        64, ge=0, le=MAX_BITS_PER_READ, description="The same for coils and discrete inputs."
    )
    max_registers_per_read: int = Field(
        MAX_REGISTERS_PER_READ,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="Some devices answer fewer than the protocol's 125 registers per request.",
    )
    max_bits_per_read: int = Field(MAX_BITS_PER_READ, ge=1, le=MAX_BITS_PER_READ)
    points: list[PointConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        seen: set[str] = set()
        for p in self.points:
            if p.name in seen:
                raise ValueError(f"point name {p.name!r} appears twice")
            seen.add(p.name)
            if not p.is_bit_table and p.width > self.max_registers_per_read:
                raise ValueError(
                    f"point {p.name!r} takes {p.width} registers, more than "
                    f"max_registers_per_read ({self.max_registers_per_read})"
                )
        return self


_SERIAL_FIELDS = ("serial_port", "baudrate", "bytesize", "parity", "stopbits")
_TCP_FIELDS = ("host", "port")


class ConnectionConfig(_Strict):
    """One Modbus TCP socket (to a device or a gateway) or one RTU serial line.

    Every device listed shares the connection: their requests are sent one at a time. One flat
    model for both transports (rather than a tagged union) keeps error locations the same as
    the file's: ``connections[0].port``, not ``connections[0].tcp.port``.
    """

    name: Name = Field(description="Connection name, unique within the connector.")
    transport: Literal["tcp", "rtu"] = Field(description="tcp (Modbus TCP) or rtu (serial line).")
    host: str | None = Field(None, min_length=1, description="tcp: device or gateway address.")
    port: int = Field(502, ge=1, le=65535, description="tcp: port.")
    serial_port: str | None = Field(
        None, min_length=1, description="rtu: serial device, e.g. /dev/ttyUSB0."
    )
    baudrate: int = Field(19200, gt=0, description="rtu: bits per second.")
    bytesize: Literal[7, 8] = Field(8, description="rtu: data bits.")
    parity: Literal["N", "E", "O"] = Field("E", description="rtu: parity (the standard: E).")
    stopbits: Literal[1, 2] = Field(1, description="rtu: stop bits.")
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    reconnect_min_s: float = Field(0.5, gt=0, description="First wait before reconnecting.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnects.")
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.transport == "tcp":
            if self.host is None:
                raise ValueError("a tcp connection needs host")
            wrong = [f for f in _SERIAL_FIELDS if f in self.model_fields_set]
        else:
            if self.serial_port is None:
                raise ValueError("an rtu connection needs serial_port (e.g. /dev/ttyUSB0)")
            wrong = [f for f in _TCP_FIELDS if f in self.model_fields_set]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} do(es) not apply to a {self.transport} connection"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        units: set[int] = set()
        for d in self.devices:
            if d.unit_id in units:
                raise ValueError(f"unit_id {d.unit_id} appears twice on connection {self.name!r}")
            units.add(d.unit_id)
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.serial_port)


class ModbusConfig(_Strict):
    """Configuration of one Modbus connector section."""

    connections: list[ConnectionConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        conns: set[str] = set()
        devices: set[str] = set()
        for c in self.connections:
            if c.name in conns:
                raise ValueError(f"connection name {c.name!r} appears twice")
            conns.add(c.name)
            for d in c.devices:
                if d.name in devices:
                    raise ValueError(f"device name {d.name!r} appears twice")
                devices.add(d.name)
        return self

    def devices(self) -> list[tuple[ConnectionConfig, DeviceConfig]]:
        return [(c, d) for c in self.connections for d in c.devices]
