"""The typed doorway to asyncua used by this package.

asyncua 2.1 ships type hints, but some name enum members as types (``NodeId`` wants
"ua.Int32", ``DataValue`` wants "ua.DateTime") and its top-level modules do not re-export
their names, so mypy rejects correct calls. The few constructors used here are wrapped once,
and the names are imported from the modules that define them.
"""

from __future__ import annotations

from datetime import datetime

from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

__all__ = [
    "AttributeIds",
    "Client",
    "ObjectIdNames",
    "ObjectIds",
    "Server",
    "StatusCodes",
    "UaError",
    "UaStatusCodeError",
    "data_value",
    "node_id",
]


def node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]


def data_value(variant: ua.Variant, stamp: datetime | None = None) -> ua.DataValue:
    """A DataValue; with ``stamp`` as both source and server timestamp."""
    return ua.DataValue(variant, SourceTimestamp=stamp, ServerTimestamp=stamp)  # type: ignore[arg-type]
