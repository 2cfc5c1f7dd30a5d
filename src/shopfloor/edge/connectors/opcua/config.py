"""The ``opcua`` connector section of the gateway configuration (pydantic, unknown keys refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["DeviceConfig", "NodeConfig", "OpcUaConfig", "SecurityConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Strict):
    """One variable of a device: which node, under which signal name, how it is sampled."""

    node_id: str = Field(min_length=1, description="OPC UA node id, e.g. ns=2;s=Line1.Speed")
    signal: str = Field(min_length=1, description="signal name in the platform")
    deadband: float | None = Field(default=None, ge=0, description="report only larger changes")
    deadband_type: Literal["absolute", "percent"] = "absolute"
    sampling_interval_ms: float | None = Field(
        default=None, ge=0, description="server sampling; default: the device's"
    )


class DeviceConfig(_Strict):
    """A group of nodes that reach the platform as one device."""

    name: str = Field(min_length=1)
    sampling_interval_ms: float | None = Field(
        default=None, ge=0, description="default for its nodes; none: the publishing interval"
    )
    nodes: list[NodeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_signals(self) -> Self:
        seen: set[str] = set()
        for node in self.nodes:
            if node.signal in seen:
                raise ValueError(f"device {self.name!r}: signal {node.signal!r} appears twice")
            seen.add(node.signal)
        return self


class SecurityConfig(_Strict):
    """``None``, or Basic256Sha256 with Sign / SignAndEncrypt and a client certificate."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = Field(default=None, description="client certificate (DER or PEM)")
    private_key: Path | None = Field(default=None, description="client private key (PEM)")
    server_certificate: Path | None = Field(
        default=None, description="pin the server's certificate; none: take it from the endpoint"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.policy == "None":
            if self.mode != "None":
                raise ValueError(f"security mode {self.mode!r} needs policy Basic256Sha256")
            return self
        if self.mode == "None":
            raise ValueError("policy Basic256Sha256 needs mode Sign or SignAndEncrypt")
        if self.certificate is None or self.private_key is None:
            raise ValueError("policy Basic256Sha256 needs certificate and private_key paths")
        return self


class OpcUaConfig(_Strict):
    """One OPC UA server (one session) and the devices read from it."""

    endpoint: str = Field(description="opc.tcp://host:port/path")
    security: SecurityConfig = SecurityConfig()
    username: str | None = None
    password: SecretStr | None = None
    publishing_interval_ms: float = Field(default=500.0, gt=0)
    queue_size: int = Field(default=1, ge=1, le=10_000)
    items_per_subscription: int = Field(default=2_500, ge=1)
    max_items_per_call: int | None = Field(
        default=None,
        ge=1,
        description="cap per CreateMonitoredItems call; none: server limit or 1000",
    )
    request_timeout_s: float = Field(default=10.0, gt=0)
    watchdog_s: float = Field(default=10.0, gt=0, description="session keep-alive probe interval")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    devices: list[DeviceConfig] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"endpoint must start with opc.tcp://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"device names appear twice: {', '.join(dupes)}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self
