"""Kinds of signal values and data classification labels.

Kept apart from core.types (which needs pyarrow) so the edge gateway can use them alone.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Classification", "DataType"]


class DataType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


class Classification(StrEnum):
    GENERAL = "general"
    IMPORTANT = "important"
    CORE = "core"
