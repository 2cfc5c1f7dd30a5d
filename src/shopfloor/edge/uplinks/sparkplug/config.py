"""Configuration of the Sparkplug B uplink: broker, credentials, Sparkplug identity, hints."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["SparkplugUplinkConfig", "TlsConfig"]

# Sparkplug ids are MQTT topic levels: these characters would change the topic's structure.
_FORBIDDEN = ("/", "+", "#")


def check_topic_level(value: str, what: str) -> str:
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{what} {value!r} must be non-empty and contain none of / + #")
    return value


class TlsConfig(BaseModel):
    """TLS to the broker. Without ``ca_file`` the system's trusted CAs verify the broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"tls.{name} {str(path)!r} is not a readable file")
        return self


class SparkplugUplinkConfig(BaseModel):
    """The gateway as one Sparkplug B edge node on an MQTT broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    tls: TlsConfig | None = None
    username: str | None = None
    password: SecretStr | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"

    group_id: str
    edge_node_id: str
    # Defaults to "shopfloor-<group_id>-<edge_node_id>"; must be unique on the broker.
    client_id: str | None = None
    # When set, births wait for spBv1.0/STATE/<primary_host_id> to say online (Sparkplug 3.0)
    # and data is held back (send raises) while it says offline.
    primary_host_id: str | None = None

    # QoS 1: send() returns once the broker acknowledged every message. QoS 0 is what the
    # Sparkplug specification prescribes for births and data, but nothing is acknowledged then.
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(30, ge=5, le=65535)
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    # How long send() waits for the acknowledgements before raising UplinkError.
    publish_timeout_s: float = Field(10.0, gt=0, le=600)
    # Wait between reconnect attempts: doubles from min to max, back to min once connected.
    reconnect_min_s: float = Field(1.0, gt=0, le=600)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    # Readings of one device are split into several DDATA messages above this many metrics.
    max_metrics_per_message: int = Field(1000, ge=1, le=100_000)
    # Datatype hints per "device/signal" (a Reading carries no datatype: numbers are Double,
    # text is String unless a hint says otherwise).
    datatypes: dict[str, Literal["Double", "Float", "Boolean", "Int64", "String"]] = Field(
        default_factory=dict
    )

    @field_validator("group_id", "edge_node_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return check_topic_level(value, "Sparkplug id")

    @field_validator("primary_host_id")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else check_topic_level(value, "primary_host_id")

    @model_validator(mode="after")
    def _ranges(self) -> SparkplugUplinkConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        for key in self.datatypes:
            if "/" not in key:
                raise ValueError(f"datatypes key {key!r} must be 'device/signal'")
        return self

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"shopfloor-{self.group_id}-{self.edge_node_id}"
