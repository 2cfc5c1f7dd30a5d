"""Configuration of the MQTT JSON connector: the broker, what to subscribe, how to map payloads."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from shopfloor.edge.connectors.mqtt_json.jsonpath import JsonPath

__all__ = [
    "DEVICE_LEVEL",
    "BrokerConfig",
    "CommandConfig",
    "MqttJsonConfig",
    "PayloadMapping",
    "Subscription",
    "TimestampUnit",
    "TlsConfig",
]

DEVICE_LEVEL = "{device}"
TimestampUnit = Literal["s", "ms", "us", "ns", "rfc3339"]


def _check_path(text: str, where: str) -> None:
    try:
        JsonPath(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_topic(topic: str, where: str, *, wildcards: bool) -> None:
    """MQTT topic rules, plus ``{device}`` standing for one whole level."""
    if not topic:
        raise ValueError(f"{where}: topic must not be empty")
    levels = topic.split("/")
    if levels.count(DEVICE_LEVEL) > 1:
        raise ValueError(f"{where}: {DEVICE_LEVEL} may appear only once in {topic!r}")
    for i, level in enumerate(levels):
        if level == DEVICE_LEVEL:
            continue
        if "{" in level or "}" in level:
            raise ValueError(f"{where}: only a whole level {DEVICE_LEVEL} is allowed in {topic!r}")
        if level in ("+", "#"):
            if not wildcards:
                raise ValueError(f"{where}: no wildcards allowed in {topic!r}")
            if level == "#" and i != len(levels) - 1:
                raise ValueError(f"{where}: '#' must be the last level of {topic!r}")
        elif "+" in level or "#" in level:
            raise ValueError(f"{where}: a wildcard must be a whole level in {topic!r}")


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str | None = Field(default=None, description="CA bundle; None: the system's")
    cert_file: str | None = None
    key_file: str | None = None
    # Skips the host-name check only; the certificate chain is still verified.
    insecure: bool = False


class BrokerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: TlsConfig | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = ""  # empty: the broker assigns one (a clean session every time)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("broker: a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("broker: reconnect_max_s is below reconnect_min_s")
        return self


class PayloadMapping(BaseModel):
    """Where the points are in a JSON payload; paths are relative to a sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Path of an array of samples; None: the payload itself is one sample.
    samples: str | None = None
    # Path of the timestamp in a sample; None: the time the message arrived.
    timestamp: str | None = None
    timestamp_unit: TimestampUnit = "ms"
    # Signal name -> path of its value in a sample ...
    values: dict[str, str] | None = None
    # ... or the path of an object whose numeric (and true/false) fields all become signals.
    numeric_fields: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.values is None) == (self.numeric_fields is None):
            raise ValueError("mapping: give exactly one of values or numeric_fields")
        if self.values is not None and not self.values:
            raise ValueError("mapping: values is empty")
        for name, path in {
            "samples": self.samples,
            "timestamp": self.timestamp,
            "numeric_fields": self.numeric_fields,
            **{f"values.{k}": v for k, v in (self.values or {}).items()},
        }.items():
            if path is not None:
                _check_path(path, f"mapping.{name}")
        return self


class Subscription(BaseModel):
    """A topic filter, which device its messages belong to, and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # MQTT filter; one level may be {device}: it matches like '+' and names the device.
    topic: str
    device: str | None = Field(default=None, description="fixed device name")
    qos: Literal[0, 1, 2] = 0
    mapping: PayloadMapping

    @model_validator(mode="after")
    def _check(self) -> Self:
        where = f"subscription {self.topic!r}"
        _check_topic(self.topic, where, wildcards=True)
        from_topic = DEVICE_LEVEL in self.topic.split("/")
        if from_topic == (self.device is not None):
            raise ValueError(
                f"{where}: name the device either with device: or a {DEVICE_LEVEL} level"
            )
        return self

    @property
    def filter(self) -> str:
        """The topic filter sent to the broker ({device} becomes '+')."""
        return "/".join("+" if lv == DEVICE_LEVEL else lv for lv in self.topic.split("/"))

    @property
    def device_level(self) -> int | None:
        levels = self.topic.split("/")
        return levels.index(DEVICE_LEVEL) if DEVICE_LEVEL in levels else None


class CommandConfig(BaseModel):
    """Where writes are published and how they are confirmed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str  # may contain {device}
    # The device answers {"id": ..., "ok": true/false, "value": ..., "message": ...} here.
    response_topic: str | None = None
    # response: wait for the answer on response_topic; telemetry: wait until the signal's
    # telemetry shows the written value.
    confirm_by: Literal["response", "telemetry"] = "response"
    qos: Literal[0, 1, 2] = 1

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_topic(self.topic, "commands.topic", wildcards=False)
        if self.response_topic is not None:
            _check_topic(self.response_topic, "commands.response_topic", wildcards=False)
        if self.confirm_by == "response" and self.response_topic is None:
            raise ValueError("commands: confirm_by response needs a response_topic")
        return self

    def topic_for(self, device: str) -> str:
        return self.topic.replace(DEVICE_LEVEL, device)

    @property
    def response_filter(self) -> str | None:
        if self.response_topic is None:
            return None
        return "/".join("+" if lv == DEVICE_LEVEL else lv for lv in self.response_topic.split("/"))


class MqttJsonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: BrokerConfig = BrokerConfig()
    subscriptions: list[Subscription] = Field(min_length=1)
    commands: CommandConfig | None = None
    # A device's points are handed on at least this often, as one reading.
    batch_s: float = Field(default=0.1, gt=0, le=10)
    # ... and sooner when this many points are waiting.
    max_batch_points: int = Field(default=10_000, ge=1)
