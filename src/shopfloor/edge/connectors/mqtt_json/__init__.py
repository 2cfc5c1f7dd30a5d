"""MQTT JSON connector: devices that publish JSON telemetry to an MQTT broker.

paho-mqtt carries the protocol; this package maps topics to devices (:mod:`.config`), JSON
payloads to points with a tiny path syntax (:mod:`.jsonpath`, :mod:`.mapping`) and bridges
paho's network thread to the event loop (:mod:`.connector`).
"""

from shopfloor.edge.connectors.mqtt_json.config import (
    BrokerConfig,
    CommandConfig,
    MqttJsonConfig,
    PayloadMapping,
    Subscription,
    TlsConfig,
)

__all__ = [
    "BrokerConfig",
    "CommandConfig",
    "MqttJsonConfig",
    "PayloadMapping",
    "Subscription",
    "TlsConfig",
]
