"""The gateway's configuration file (``edge.yaml``): models, loading, errors with line numbers.

Validation runs in two stages. The first checks the gateway's own sections (buffer, uplink,
status, forwarder) and the ``type``/``name`` of every connector; the second validates the rest
of each connector section with that connector's own ``config_model`` (and a Sparkplug uplink
with the Sparkplug model), because those models come from packages installed beside the
gateway. Errors of both stages carry a location such as ``connectors[1].devices[0].period_s``
that :func:`load_edge_config` maps back to the line of the YAML file.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from shopfloor.edge.connector import Connector, connector_class, connector_names

__all__ = [
    "BufferConfig",
    "ConnectorSection",
    "EdgeConfig",
    "EdgeConfigError",
    "ForwarderConfig",
    "HttpUplinkConfig",
    "Issue",
    "RemoteConfig",
    "SparkplugSection",
    "StatusConfig",
    "load_edge_config",
    "parse_bytes",
    "parse_duration_s",
    "parse_edge_config",
]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_DURATIONS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(raw: object) -> int:
    """``1GiB``, ``512 MB``, ``1.5GiB`` or a plain integer of bytes."""
    if isinstance(raw, bool):
        raise ValueError("expected a size such as 1GiB or 500MB, not a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        m = _NUMBER_UNIT.match(raw)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(f"expected a size such as 1GiB, 500MB or a number of bytes, not {raw!r}")


def parse_duration_s(raw: object) -> float:
    """``7d``, ``12h``, ``30m``, ``45s``, ``250ms`` or a plain number of seconds."""
    if isinstance(raw, bool):
        raise ValueError("expected a duration such as 7d or 30s, not a boolean")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        m = _NUMBER_UNIT.match(raw)
        if m and m.group(2).lower() in _DURATIONS:
            return float(m.group(1)) * _DURATIONS[m.group(2).lower()]
        if m and not m.group(2):
            return float(m.group(1))
    raise ValueError(f"expected a duration such as 7d, 12h, 30s or 250ms, not {raw!r}")


Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]
Seconds = Annotated[float, BeforeValidator(parse_duration_s), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BufferConfig(_Strict):
    """The store-and-forward buffer on the gateway's disk."""

    max_bytes: Bytes = Field(1 << 30, description="Disk the buffer may use, e.g. 1GiB.")
    max_age: Seconds = Field(7 * 86400.0, description="Readings older than this are dropped.")
    when_full: Literal["drop_oldest", "reject"] = Field(
        "drop_oldest", description="drop_oldest keeps the newest data; reject keeps the oldest."
    )
    fsync: Literal["always", "interval", "never"] = Field(
        "always", description="When appended readings are forced to disk."
    )
    fsync_interval: Seconds = Field(0.02, description="Grouping window of fsync: interval.")
    segment_bytes: Bytes = Field(16 << 20, description="Size of one buffer file.")


class ForwarderConfig(_Strict):
    """How buffered readings are sent to the uplink."""

    batch_points: int = Field(5000, gt=0, description="Most points in one send.")
    retry_initial: Seconds = Field(0.5, description="First wait after a failed send.")
    retry_max: Seconds = Field(30.0, description="Longest wait between retries.")
    historical_after: Seconds = Field(
        10.0, description="Readings older than this when sent are flagged historical."
    )


class HttpUplinkConfig(_Strict):
    """Batches to the platform's ``POST /api/v1/ingest``."""

    type: Literal["http"]
    url: str = Field(description="Base URL of the platform, e.g. https://shopfloor.example:8080")
    api_key: SecretStr | None = Field(None, description="The tenant's API key.")
    api_key_file: Path | None = Field(None, description="File holding the API key instead.")
    timeout: Seconds = Field(10.0, description="Timeout of one request.")
    verify_tls: bool = Field(True, description="Check the server's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle to check the certificate with.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, not {v!r}")
        return v.rstrip("/")

    def key(self) -> str:
        """The API key, from ``api_key`` or read from ``api_key_file``."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            return self.api_key_file.read_text().strip()
        raise ValueError("uplink: set api_key or api_key_file")


class SparkplugSection(BaseModel):
    """``type: sparkplug``; the rest is validated by the Sparkplug uplink's own model."""

    model_config = ConfigDict(extra="allow")
    type: Literal["sparkplug"]
    _config: BaseModel | None = PrivateAttr(None)

    @property
    def config(self) -> BaseModel:
        if self._config is None:
            raise RuntimeError("sparkplug uplink section was not validated (use load_edge_config)")
        return self._config


class StatusConfig(_Strict):
    file: Path | None = Field(None, description="Status JSON file; default <data_dir>/status.json.")
    interval: Seconds = Field(1.0, description="How often the status file is rewritten.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on 127.0.0.1:<port>."
    )


class ConnectorSection(BaseModel):
    """``{type: <domain>, name: ..., <rest>}``; the rest goes to the connector's config model."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    _config: BaseModel | None = PrivateAttr(None)
    _cls: builtins.type[Connector] | None = PrivateAttr(None)

    @property
    def config(self) -> BaseModel:
        if self._config is None:
            raise RuntimeError(f"connector {self.name!r} was not validated (use load_edge_config)")
        return self._config

    @property
    def connector_cls(self) -> builtins.type[Connector]:
        if self._cls is None:
            raise RuntimeError(f"connector {self.name!r} was not validated (use load_edge_config)")
        return self._cls


Uplink = Annotated[HttpUplinkConfig | SparkplugSection, Field(discriminator="type")]


class RemoteConfig(_Strict):
    """``remote:``: connectors configured from the platform (docs/edge-remote-config.md).

    The gateway long-polls ``GET /api/v1/gateways/{gateway}/config`` and runs the connectors it
    gets beside the file's own. ``url`` and the key default to the HTTP uplink's.
    """

    enabled: bool = Field(True, description="Poll the platform for connectors.")
    gateway: str | None = Field(
        None, min_length=1, description="The gateway's device name; default: name."
    )
    poll_s: Seconds = Field(
        25.0, le=30.0, description="Longest wait of one long-poll (the platform's limit: 30 s)."
    )
    retry_s: Seconds = Field(5.0, description="Wait after a failed poll.")
    url: str | None = Field(None, description="Base URL of the platform; default: the uplink's.")
    api_key: SecretStr | None = Field(None, description="The tenant's API key.")
    api_key_file: Path | None = Field(None, description="File holding the API key instead.")
    timeout: Seconds = Field(10.0, description="Timeout of one request beyond the wait.")
    verify_tls: bool = Field(True, description="Check the server's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle to check the certificate with.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, not {v!r}")
        return None if v is None else v.rstrip("/")


class EdgeConfig(_Strict):
    name: str = Field(min_length=1, description="Name of this gateway.")
    data_dir: Path = Field(Path("edge-data"), description="Buffer, status and quarantine files.")
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    forwarder: ForwarderConfig = Field(default_factory=ForwarderConfig)
    uplink: Uplink
    status: StatusConfig = Field(default_factory=StatusConfig)
    connectors: list[ConnectorSection] = Field(default_factory=list)
    remote: RemoteConfig | None = Field(None, description="Connectors from the platform.")

    @field_validator("connectors")
    @classmethod
    def _unique_names(cls, v: list[ConnectorSection]) -> list[ConnectorSection]:
        seen: set[str] = set()
        for c in v:
            if c.name in seen:
                raise ValueError(f"connector name {c.name!r} is used twice")
            seen.add(c.name)
        return v

    @property
    def status_file(self) -> Path:
        return self.status.file or self.data_dir / "status.json"


@dataclass(frozen=True)
class Issue:
    """One problem: where (a pydantic-style location) and what."""

    loc: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def where(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out


class EdgeConfigError(ValueError):
    """The configuration is wrong; ``str()`` lists every issue as ``file:line: field: message``."""

    def __init__(self, issues: Sequence[Issue], source: str = "edge.yaml") -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = []
        for i in self.issues:
            place = f"{self.source}:{i.line}" if i.line else self.source
            lines.append(f"{place}: {i.where}: {i.message}" if i.loc else f"{place}: {i.message}")
        return "\n".join(lines)


ClassLookup = Callable[[str], type[Connector]]


def _issues(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[Issue]:
    out = []
    for e in exc.errors(include_url=False):
        loc = (*prefix, *e["loc"])
        if loc[:1] == ("uplink",) and loc[1:2] in (("http",), ("sparkplug",)):
            loc = loc[:1] + loc[2:]  # the union's tag is in the location; the file has none
        out.append(Issue(loc, e["msg"]))
    return out


def _sparkplug_model() -> type[BaseModel]:
    try:
        from shopfloor.edge.uplinks.sparkplug.config import SparkplugUplinkConfig
    except ImportError as exc:
        raise ValueError(f"the Sparkplug uplink is not installed ({exc})") from None
    model: type[BaseModel] = SparkplugUplinkConfig
    return model


def parse_edge_config(data: Any, *, lookup: ClassLookup | None = None) -> EdgeConfig:
    """Validate a loaded document; raises :class:`EdgeConfigError` (locations, no lines)."""
    if not isinstance(data, dict):
        raise EdgeConfigError([Issue((), "the file must be a mapping (name:, uplink:, ...)")])
    try:
        cfg = EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise EdgeConfigError(_issues(exc)) from None
    issues: list[Issue] = []
    find = lookup or connector_class
    for i, section in enumerate(cfg.connectors):
        try:
            cls = find(section.type)
        except KeyError:
            known = ", ".join(connector_names()) or "none"
            msg = f"unknown connector type {section.type!r}; installed: {known}"
            issues.append(Issue(("connectors", i, "type"), msg))
            continue
        except Exception as exc:  # a broken connector package must not hide the others
            issues.append(Issue(("connectors", i, "type"), f"cannot load {section.type!r}: {exc}"))
            continue
        try:
            section._config = cls.config_model.model_validate(section.model_extra or {})
            section._cls = cls
        except ValidationError as exc:
            issues.extend(_issues(exc, ("connectors", i)))
    remote = cfg.remote
    no_url = remote is not None and remote.enabled and remote.url is None
    if no_url and not isinstance(cfg.uplink, HttpUplinkConfig):
        msg = "give url (and api_key or api_key_file): the uplink is not http"
        issues.append(Issue(("remote", "url"), msg))
    if isinstance(cfg.uplink, SparkplugSection):
        rest = dict(cfg.uplink.model_extra or {})
        try:
            model = _sparkplug_model()
            if "type" in model.model_fields:
                rest["type"] = "sparkplug"
            cfg.uplink._config = model.model_validate(rest)
        except ValidationError as exc:
            issues.extend(_issues(exc, ("uplink",)))
        except ValueError as exc:
            issues.append(Issue(("uplink", "type"), str(exc)))
    if issues:
        raise EdgeConfigError(issues)
    return cfg


# --- YAML with line numbers -------------------------------------------------------------------
def _line_of(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the deepest YAML node the location reaches."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = value
                    # a scalar's own line; a block's key line (where the reader looks)
                    line = (value if isinstance(value, yaml.ScalarNode) else key).start_mark.line
                    line += 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break  # e.g. a missing field: the line of the section it is missing from
        node = nxt
    return line


def load_edge_config(path: Path | str, *, lookup: ClassLookup | None = None) -> EdgeConfig:
    """Read and validate ``edge.yaml``; errors read ``edge.yaml:14: connectors[1].x: ...``.

    A relative ``data_dir`` (and status file) is taken relative to the file's folder, so the
    gateway finds its buffer whatever directory it was started from.
    """
    path = Path(path)
    source = path.name
    try:
        text = path.read_text()
    except OSError as exc:
        issue = Issue((), f"cannot read the file: {exc.strerror or exc}")
        raise EdgeConfigError([issue], source) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise EdgeConfigError([Issue((), f"YAML syntax error: {problem}", line)], source) from None
    try:
        cfg = parse_edge_config(data, lookup=lookup)
    except EdgeConfigError as exc:
        located = [Issue(i.loc, i.message, i.line or _line_of(root, i.loc)) for i in exc.issues]
        raise EdgeConfigError(located, source) from None
    base = path.resolve().parent
    if not cfg.data_dir.is_absolute():
        cfg.data_dir = base / cfg.data_dir
    if cfg.status.file is not None and not cfg.status.file.is_absolute():
        cfg.status.file = base / cfg.status.file
    return cfg
