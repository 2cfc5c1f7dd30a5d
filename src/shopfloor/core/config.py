"""Platform settings: defaults < YAML file < SHOPFLOOR_* environment variables.

The embedded defaults need nothing installed: registry in SQLite and historian in DuckDB,
both under ``data_dir``. Scale-out changes only the URLs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shopfloor.core.errors import BadInput


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("shopfloor-data"), description="Folder holding all platform data.")
    role: Literal["all", "api", "ingest", "rules"] = Field(
        "all",
        description="What this process runs (docs/scale-out.md): all (one process, the default), "
        "api (HTTP API and console), ingest (MQTT subscriber of an external broker), rules "
        "(rules, apps, retention). Roles other than all need PostgreSQL for registry and "
        "historian.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(8080, ge=1, le=65535, description="Port of the HTTP API.")
    registry_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the registry: sqlite:///<file> (default "
        "<data_dir>/registry.db) or postgresql://user@host/db.",
    )
    historian_url: str | None = Field(
        None,
        description="Historian URL: duckdb:///<folder> (default <data_dir>/historian) or "
        "postgresql://user@host/db (docs/historian-postgres.md).",
    )
    commit_interval_ms: float = Field(
        10.0, gt=0, le=1000, description="Writes arriving within this window share one commit."
    )
    max_batch_points: int = Field(
        1_000_000, gt=0, description="Largest batch one ingest request may carry."
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest request body.")
    hot_max_points: int = Field(
        2_000_000,
        gt=0,
        description="Points kept in the recent segment before it is compacted into blocks.",
    )
    compact_interval_s: float = Field(
        300.0, gt=0, description="Seconds between background compactions of the recent segment."
    )

    mqtt_mode: Literal["embedded", "external", "off"] = Field(
        "embedded",
        description="MQTT device endpoint: in-process broker, an external broker, or none.",
    )
    mqtt_host: str = Field("127.0.0.1", description="Address the embedded MQTT broker binds to.")
    mqtt_port: int = Field(1883, ge=0, le=65535, description="Port of the embedded MQTT broker.")
    mqtt_tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="TLS port of the embedded broker; devices log in with device CA certificates.",
    )
    mqtt_url: str | None = Field(
        None, description="External broker as mqtt://user:pass@host:port (mqtt_mode external)."
    )
    mqtt_share_group: str = Field(
        "shopfloor", description="Shared subscription group of the ingest workers (external)."
    )
    rules_partition: str = Field(
        "0/1",
        description="The devices a rules process evaluates, INDEX/COUNT (docs/scale-out.md): "
        "run COUNT rules processes with indexes 0 to COUNT-1; partition 0 also runs the apps "
        "and retention.",
    )
    mqtt_client_id: str | None = Field(
        None,
        description="MQTT client id of this process's broker session (external); default one "
        "made once and kept in <data_dir>/mqtt-client-id, so a restarted ingest worker takes "
        "back the messages its session had not acknowledged.",
    )
    mqtt_dynsec_url: str | None = Field(
        None,
        description="Mosquitto dynamic-security admin login as mqtt://admin:pass@host:port; "
        "set to push device credentials and ACLs into an external Mosquitto.",
    )
    mqtt_max_message_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest MQTT message taken; larger ones are rejected."
    )
    mqtt_device_rate: float = Field(
        1000.0, gt=0, description="Messages per second one device may send before being dropped."
    )
    mqtt_command_timeout_s: float = Field(
        10.0, gt=0, le=300, description="How long a command call waits for the device's response."
    )

    # Security (docs/security.md). Defaults follow MLPS 2.0 level 3.
    session_idle_timeout_s: float = Field(
        900.0, gt=0, description="A login session ends after this many seconds without a request."
    )
    session_max_age_s: float = Field(
        12 * 3600.0, gt=0, description="A login session ends this long after login, active or not."
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins in a row after which the account is locked."
    )
    login_lockout_s: float = Field(
        900.0, gt=0, description="How long an account stays locked after too many failed logins."
    )
    password_min_length: int = Field(12, ge=8, le=128, description="Shortest password accepted.")
    password_max_age_days: int = Field(
        90, ge=0, description="Days after which a password must be changed (0: never)."
    )
    password_history: int = Field(
        5, ge=0, le=24, description="How many earlier passwords a user may not reuse."
    )
    audit_retention_days: int = Field(
        180,
        ge=180,
        description="Initial audit retention in days (at least 180); a security admin changes "
        "it at run time.",
    )
    audit_key_file: Path | None = Field(
        None,
        description="Key the audit chain is sealed with (HMAC); default <data_dir>/audit.key, "
        "made with the first audit record. Keep a copy off the database host.",
    )
    region: str = Field(
        "default",
        min_length=1,
        max_length=32,
        description="Region this deployment stores data in; egress to other regions is checked "
        "against residency labels.",
    )
    ui: bool = Field(True, description="Serve the web console under /ui (shopfloor up and demo).")
    https: bool = Field(
        False,
        description="Serve the API over HTTPS (with tls_cert_file/tls_key_file, or a "
        "self-signed certificate made on first start).",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) for HTTPS and MQTTS; default self-signed."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tenant_ingest_points_per_s: float = Field(
        5_000_000.0, gt=0, description="Default per-tenant ingest rate limit in points per second."
    )
    tenant_api_requests_per_s: float = Field(
        200.0, gt=0, description="Default per-tenant API rate limit in requests per second."
    )
    tenant_stored_points_max: int | None = Field(
        None, gt=0, description="Default per-tenant quota of stored points (None: no quota)."
    )

    def resolved_registry_url(self) -> str:
        return self.registry_url or f"sqlite:///{self.data_dir / 'registry.db'}"

    def resolved_historian_url(self) -> str:
        return self.historian_url or f"duckdb:///{self.data_dir / 'historian'}"


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from an optional YAML file, the environment, then explicit overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadInput(f"cannot read settings: {exc}", str(path)) from None
        if not isinstance(loaded, dict):
            raise BadInput("settings file must hold a mapping", str(path))
        data.update(loaded)
    for name in Settings.model_fields:
        env = os.environ.get(f"SHOPFLOOR_{name.upper()}")
        if env is not None:
            data[name] = env
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{first['msg']} (settings{f' in {path}' if path else ''})", where) from None
