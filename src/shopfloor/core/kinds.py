"""Kinds of signal values, data classification labels and user roles.

Kept apart from core.types (which needs pyarrow) so the edge gateway can use them alone.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Classification", "DataType", "Role"]


class DataType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


class Classification(StrEnum):
    GENERAL = "general"
    IMPORTANT = "important"
    CORE = "core"


class Role(StrEnum):
    """The roles a user can hold (their permissions: security/roles.py)."""

    PLATFORM_ADMIN = "platform_admin"
    TENANT_ADMIN = "tenant_admin"
    ENGINEER = "engineer"
    OPERATOR = "operator"
    VIEWER = "viewer"
    AUDITOR = "auditor"
    SECURITY_ADMIN = "security_admin"
