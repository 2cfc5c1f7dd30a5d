"""edge.yaml: sizes and durations, defaults, and errors naming file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.edge.config import (
    EdgeConfigError,
    HttpUplinkConfig,
    load_edge_config,
    parse_bytes,
    parse_duration_s,
)
from shopfloor.edge.connector import Connector


class _Device(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    period_s: float = Field(gt=0)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    devices: list[_Device]


class FakeConnector(Connector):
    domain = "fake"
    config_model = _Options

    async def run(self) -> None:  # pragma: no cover - never run in these tests
        raise NotImplementedError


def lookup(domain: str) -> type[Connector]:
    if domain == "fake":
        return FakeConnector
    raise KeyError(domain)


GOOD = """\
name: line-1-gateway
data_dir: data
buffer:
  max_bytes: 2GiB
  max_age: 3d
  when_full: reject
  fsync: interval
uplink:
  type: http
  url: http://127.0.0.1:8080/
  api_key: secret-key
status:
  metrics_port: 9108
connectors:
  - type: fake
    name: press-plc
    devices:
      - name: press-01
        period_s: 0.5
  - type: fake
    name: oven-plc
    host: 10.0.0.7
    devices:
      - name: oven-01
        period_s: 2
      - name: oven-02
        period_s: 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(EdgeConfigError) as info:
        load_edge_config(path, lookup=lookup)
    return str(info.value)


def test_sizes_and_durations() -> None:
    assert parse_bytes("1GiB") == 1 << 30
    assert parse_bytes("512 MB") == 512_000_000
    assert parse_bytes("1.5KiB") == 1536
    assert parse_bytes(4096) == 4096
    assert parse_duration_s("7d") == 7 * 86400
    assert parse_duration_s("250ms") == pytest.approx(0.25)
    assert parse_duration_s("90") == 90.0
    assert parse_duration_s(2) == 2.0
    for bad in ("1 parsec", "GiB", True, None):
        with pytest.raises(ValueError, match="expected a size"):
            parse_bytes(bad)
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration_s("soon")


def test_a_good_file_loads_with_its_values_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("period_s: 0\n", "period_s: 5\n"))
    cfg = load_edge_config(path, lookup=lookup)
    assert cfg.name == "line-1-gateway"
    assert cfg.data_dir == tmp_path / "data"  # relative to the file, not the working dir
    assert cfg.status_file == tmp_path / "data" / "status.json"
    assert cfg.buffer.max_bytes == 2 << 30
    assert cfg.buffer.max_age == 3 * 86400
    assert (cfg.buffer.when_full, cfg.buffer.fsync) == ("reject", "interval")
    assert cfg.forwarder.batch_points == 5000  # a default
    assert isinstance(cfg.uplink, HttpUplinkConfig)
    assert cfg.uplink.url == "http://127.0.0.1:8080"
    assert cfg.uplink.key() == "secret-key"
    assert "secret-key" not in repr(cfg)  # the key is not printed with the config
    assert cfg.status.metrics_port == 9108
    oven = cfg.connectors[1]
    assert (oven.type, oven.name, oven.connector_cls) == ("fake", "oven-plc", FakeConnector)
    assert isinstance(oven.config, _Options)
    assert oven.config.host == "10.0.0.7"
    assert [d.period_s for d in oven.config.devices] == [2.0, 5.0]


def test_connector_field_error_names_file_line_and_field(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, GOOD))
    assert msg == "edge.yaml:27: connectors[1].devices[1].period_s: Input should be greater than 0"


def test_gateway_field_errors_with_lines(tmp_path: Path) -> None:
    text = GOOD.replace("max_age: 3d", "max_age: soon").replace("fsync: interval", "fsync: often")
    msg = error_of(write(tmp_path, text.replace("period_s: 0\n", "period_s: 1\n")))
    lines = msg.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("edge.yaml:5: buffer.max_age: Value error, expected a duration")
    assert lines[1].startswith("edge.yaml:7: buffer.fsync: Input should be 'always'")


def test_unknown_field_and_missing_field(tmp_path: Path) -> None:
    text = GOOD.replace("period_s: 0\n", "period_s: 1\n").replace("  api_key: secret-key\n", "")
    text = text.replace("  fsync: interval\n", "  fsync: interval\n  colour: blue\n")
    msg = error_of(write(tmp_path, text))
    assert "edge.yaml:8: buffer.colour: Extra inputs are not permitted" in msg
    # not missing: api_key is optional in the model, but key() needs one of the two
    text = text.replace("  colour: blue\n", "").replace("  url: http://127.0.0.1:8080/\n", "")
    msg = error_of(write(tmp_path, text))
    assert msg == "edge.yaml:8: uplink.url: Field required"  # the line of the uplink: section


def test_unknown_connector_type_lists_installed_ones(tmp_path: Path) -> None:
    text = GOOD.replace("period_s: 0\n", "period_s: 1\n").replace(
        "  - type: fake\n    name: oven", "  - type: profinet\n    name: oven"
    )
    with pytest.raises(EdgeConfigError) as info:
        load_edge_config(write(tmp_path, text))  # the installed connectors, not the test's
    msg = str(info.value)
    assert "edge.yaml:20: connectors[1].type: unknown connector type 'profinet'; installed: " in msg
    assert "modbus" in msg
    assert "simulator" in msg


def test_bad_uplink_type(tmp_path: Path) -> None:
    text = GOOD.replace("period_s: 0\n", "period_s: 1\n").replace("type: http", "type: ftp")
    msg = error_of(write(tmp_path, text))
    assert msg.startswith("edge.yaml:8: uplink: Input tag 'ftp' found using 'type' does not match")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = GOOD.replace("  when_full: reject\n", "  when_full: [reject\n")
    msg = error_of(write(tmp_path, text))
    assert msg.startswith("edge.yaml:")
    assert "YAML syntax error" in msg
    line = int(msg.split(":")[1])
    assert 6 <= line <= 8


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "- a\n- b\n")).startswith(
        "edge.yaml:1: the file must be a mapping"
    )
    with pytest.raises(EdgeConfigError, match=r"nope.yaml: cannot read the file"):
        load_edge_config(tmp_path / "nope.yaml")


def test_duplicate_connector_names(tmp_path: Path) -> None:
    text = GOOD.replace("period_s: 0\n", "period_s: 1\n").replace(
        "name: oven-plc", "name: press-plc"
    )
    assert "connector name 'press-plc' is used twice" in error_of(write(tmp_path, text))


SPARKPLUG = """\
name: gw
uplink:
  type: sparkplug
  host: 127.0.0.1
  port: 1883
  group_id: plant-1
  edge_node_id: {node}
"""


def test_sparkplug_uplink_is_validated_by_its_own_model(tmp_path: Path) -> None:
    from shopfloor.edge.uplinks.sparkplug import SparkplugUplinkConfig

    cfg = load_edge_config(write(tmp_path, SPARKPLUG.format(node="line-1")), lookup=lookup)
    assert cfg.uplink.type == "sparkplug"
    model = cfg.uplink.config
    assert isinstance(model, SparkplugUplinkConfig)
    assert (model.group_id, model.edge_node_id, model.port) == ("plant-1", "line-1", 1883)
    msg = error_of(write(tmp_path, SPARKPLUG.format(node="line/1")))
    assert msg.startswith("edge.yaml:7: uplink.edge_node_id: Value error, ")
    assert "'line/1'" in msg
    msg = error_of(
        write(tmp_path, SPARKPLUG.format(node="x").replace("  port: 1883\n", "  prot: 1\n"))
    )
    assert msg == "edge.yaml:5: uplink.prot: Extra inputs are not permitted"


DOCS = Path(__file__).resolve().parents[2] / "docs" / "edge.md"


def test_the_example_in_the_docs_is_valid_and_every_field_is_documented(tmp_path: Path) -> None:
    import re

    from shopfloor.edge.config import BufferConfig, EdgeConfig, ForwarderConfig, StatusConfig

    text = DOCS.read_text()
    example = re.search(r"## A complete `edge.yaml`\n\n```yaml\n(.*?)```", text, re.S)
    assert example, "docs/edge.md lost its example"
    path = tmp_path / "edge.yaml"
    path.write_text(example.group(1))
    cfg = load_edge_config(path)  # the installed connectors
    assert [c.type for c in cfg.connectors] == ["modbus", "simulator"]
    sections: dict[str, type[BaseModel]] = {
        "buffer": BufferConfig,
        "forwarder": ForwarderConfig,
        "status": StatusConfig,
    }
    for name in EdgeConfig.model_fields:
        assert f"`{name}" in text, f"{name} missing from docs/edge.md"
    for section, model in sections.items():
        for name in model.model_fields:
            assert f"`{section}.{name}`" in text, f"{section}.{name} missing from docs/edge.md"
    for name in HttpUplinkConfig.model_fields:
        assert f"uplink.{name}" in text, f"uplink.{name} missing from docs/edge.md"
