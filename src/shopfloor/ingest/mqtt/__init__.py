"""The MQTT device endpoint: embedded or external broker, subscriber, JSON device API."""

from shopfloor.ingest.mqtt.service import MqttService

__all__ = ["MqttService"]
