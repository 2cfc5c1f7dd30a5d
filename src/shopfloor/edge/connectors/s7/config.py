"""Configuration of the S7 connector: one PLC connection, devices of points on it.

A point is addressed the way TIA Portal shows it: ``DB5.DBD12`` is ``area: DB, db: 5, byte: 12``
with a 4-byte type; ``M10.3`` is ``area: M, byte: 10, bit: 3, type: bool``.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["TYPE_SIZES", "Area", "PointType", "S7Config", "S7Device", "S7Point"]

Area = Literal["DB", "M", "I", "Q"]
PointType = Literal["bool", "byte", "int", "dint", "word", "dword", "real", "lreal", "string"]

# Bytes a value occupies in the PLC; a string adds its 2-byte header (max length, length).
TYPE_SIZES: dict[str, int] = {
    "bool": 1,
    "byte": 1,
    "int": 2,
    "dint": 4,
    "word": 2,
    "dword": 4,
    "real": 4,
    "lreal": 8,
}


class S7Point(BaseModel):
    """One value in the PLC: where it is, how it is encoded, how to scale it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    area: Area = "DB"
    db: int | None = Field(default=None, ge=1, le=65535, description="DB number, for area DB")
    byte: int = Field(ge=0, le=65535, description="byte offset in the area")
    type: PointType
    bit: int | None = Field(default=None, ge=0, le=7, description="bit number, for bool")
    length: int | None = Field(
        default=None, ge=1, le=254, description="declared length of a string (STRING[n])"
    )
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    @model_validator(mode="after")
    def _check_address(self) -> Self:
        where = f"point {self.name!r}"
        if self.area == "DB" and self.db is None:
            raise ValueError(f"{where}: area DB needs a db number")
        if self.area != "DB" and self.db is not None:
            raise ValueError(f"{where}: db is only for area DB, not {self.area}")
        if (self.type == "bool") != (self.bit is not None):
            raise ValueError(f"{where}: bit is required for type bool and only for bool")
        if (self.type == "string") != (self.length is not None):
            raise ValueError(f"{where}: length is required for type string and only for string")
        if self.scale == 0:
            raise ValueError(f"{where}: scale must not be 0")
        if self.type in ("bool", "string") and (self.scale != 1 or self.offset != 0):
            raise ValueError(f"{where}: scale/offset do not apply to type {self.type}")
        return self

    @property
    def size(self) -> int:
        """Bytes read for this point."""
        if self.type == "string":
            assert self.length is not None
            return self.length + 2
        return TYPE_SIZES[self.type]

    @property
    def address(self) -> str:
        """The address as TIA Portal writes it, for messages."""
        base = f"DB{self.db}.{self.byte}" if self.area == "DB" else f"{self.area}{self.byte}"
        return f"{base}.{self.bit}" if self.bit is not None else base


class S7Device(BaseModel):
    """A group of points polled together (one machine, one function block's DB, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    period_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    points: list[S7Point] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_points(self) -> Self:
        names = [p.name for p in self.points]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device {self.name!r}: duplicate point names {dupes}")
        return self


class S7Config(BaseModel):
    """One PLC: its address, the devices read from it, how reads are batched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=102, ge=1, le=65535)
    rack: int = Field(default=0, ge=0, le=7)
    slot: int = Field(default=1, ge=0, le=31, description="1 for S7-1200/1500, 2 for S7-300")
    # Points closer than this many bytes are read as one range: reading a few unused bytes is
    # cheaper than another item in the request.
    max_gap: int = Field(default=32, ge=0, le=1024)
    backoff_max_s: float = Field(default=60.0, gt=0)
    devices: list[S7Device] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> Self:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate device names {dupes}")
        return self
