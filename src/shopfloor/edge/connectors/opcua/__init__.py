"""OPC UA client connector: subscriptions in bulk, reconnect, writes with read-back, browse.

Only asyncua, numpy, pydantic, pyyaml, the standard library and :mod:`shopfloor.core` /
:mod:`shopfloor.edge` are imported here, because the edge gateway is installed on its own.
``shopfloor edge browse URL`` calls :func:`browse_to_yaml`.
"""

from shopfloor.edge.connectors.opcua.browse import TagEntry, browse, browse_to_yaml, tags_to_config
from shopfloor.edge.connectors.opcua.config import (
    DeviceConfig,
    NodeConfig,
    OpcUaConfig,
    SecurityConfig,
)
from shopfloor.edge.connectors.opcua.connector import OpcUaConnector

__all__ = [
    "DeviceConfig",
    "NodeConfig",
    "OpcUaConfig",
    "OpcUaConnector",
    "SecurityConfig",
    "TagEntry",
    "browse",
    "browse_to_yaml",
    "tags_to_config",
]
