"""Python values -> the OPC UA built-in type of the node written, and comparing read-backs."""

from __future__ import annotations

import math
from typing import Any, Final

from asyncua import ua

__all__ = ["coerce", "same_value"]

_V = ua.VariantType
_INT_RANGES: Final = {
    _V.SByte: (-(2**7), 2**7 - 1),
    _V.Byte: (0, 2**8 - 1),
    _V.Int16: (-(2**15), 2**15 - 1),
    _V.UInt16: (0, 2**16 - 1),
    _V.Int32: (-(2**31), 2**31 - 1),
    _V.UInt32: (0, 2**32 - 1),
    _V.Int64: (-(2**63), 2**63 - 1),
    _V.UInt64: (0, 2**64 - 1),
}
_FLOATS: Final = (_V.Float, _V.Double)
_BOOL_TEXT: Final = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}


def coerce(value: Any, vtype: ua.VariantType) -> Any:
    """``value`` as the Python value asyncua encodes as ``vtype``; TypeError/ValueError if not."""
    if vtype == _V.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise ValueError(f"{value!r} is not a Boolean")
    if vtype in _INT_RANGES:
        if isinstance(value, bool):
            raise TypeError(f"{value!r} is a bool, the node holds {vtype.name}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not a whole number for {vtype.name}")
            value = int(value)
        elif isinstance(value, str):
            value = int(value.strip())
        if not isinstance(value, int):
            raise TypeError(f"{value!r} is not an integer for {vtype.name}")
        lo, hi = _INT_RANGES[vtype]
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {vtype.name} ({lo}..{hi})")
        return value
    if vtype in _FLOATS:
        if isinstance(value, bool):
            raise TypeError(f"{value!r} is a bool, the node holds {vtype.name}")
        if isinstance(value, int | float | str):
            return float(value)
        raise TypeError(f"{value!r} is not a number for {vtype.name}")
    if vtype == _V.String:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"{value!r} is not text")
    raise TypeError(f"writing nodes of type {vtype.name} is not supported")


def same_value(back: Any, written: Any, vtype: ua.VariantType) -> bool:
    """Whether the read-back equals what was written (Float compared at single precision)."""
    if vtype == _V.Float and isinstance(back, float) and isinstance(written, float):
        return math.isclose(back, written, rel_tol=1e-6, abs_tol=1e-6)
    return bool(back == written and type(back) is type(written))
