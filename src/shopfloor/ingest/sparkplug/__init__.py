"""The platform's Sparkplug B host application (see docs/sparkplug-host.md).

The MQTT service feeds :meth:`SparkplugHost.handle` every ``spBv1.0/...`` message and publishes
the host's STATE; births register devices and signals, data goes to the historian.
"""

from shopfloor.ingest.sparkplug.host import NAMESPACE, REBIRTH, SparkplugHost, SparkplugIdentity

__all__ = ["NAMESPACE", "REBIRTH", "SparkplugHost", "SparkplugIdentity"]
