"""Sparkplug B uplink: the gateway publishes its readings as a Sparkplug B edge node."""

from shopfloor.edge.uplinks.sparkplug.config import SparkplugUplinkConfig, TlsConfig
from shopfloor.edge.uplinks.sparkplug.uplink import SparkplugUplink

__all__ = ["SparkplugUplink", "SparkplugUplinkConfig", "TlsConfig"]
