"""The generated protobuf module, payload helpers and configuration validation (no broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shopfloor.core.sparkplug import payload as spbp
from shopfloor.core.sparkplug import sparkplug_b_pb2
from shopfloor.edge.uplinks.sparkplug import SparkplugUplinkConfig
from shopfloor.edge.uplinks.sparkplug.node import EdgeNode

from .helpers import reading


def test_generated_proto_is_the_specifications(spb: Any) -> None:
    # pysparkplug ships the module generated from Eclipse Tahu's sparkplug_b.proto; ours,
    # generated from our transcription, must describe exactly the same messages.
    ours = sparkplug_b_pb2.DESCRIPTOR.serialized_pb
    theirs = spb._protobuf.sparkplug_b_pb2.DESCRIPTOR.serialized_pb
    assert ours == theirs
    assert sparkplug_b_pb2.DESCRIPTOR.package == "org.eclipse.tahu.protobuf"


def test_signed_integers_round_trip_through_unsigned_fields() -> None:
    raw = spbp.encode(
        1,
        0,
        [
            spbp.MetricValue("i64", 1, spbp.INT64, -5),
            spbp.MetricValue("i32", 2, spbp.INT32, -7),
            spbp.MetricValue("u32", 3, spbp.UINT32, 0xFFFFFFFF),
        ],
    )
    metrics = spbp.decode(raw).metrics
    assert metrics[0].long_value == 2**64 - 5
    assert [spbp.metric_value(m, spbp.DOUBLE) for m in metrics] == [-5, -7, 0xFFFFFFFF]


def test_decode_rejects_garbage_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        spbp.decode(b"\xff\xff\xff")


def test_data_is_split_above_max_metrics_and_refused_before_birth() -> None:
    node = EdgeNode("g", "n", max_metrics=4)
    r = reading("d", tuple(f"s{i}" for i in range(10)), 5, [float(i) for i in range(10)])
    with pytest.raises(RuntimeError, match="not born"):
        node.data([r], historical=False, now_ms=1)
    node.births(1)
    messages = node.data([r], historical=False, now_ms=1)
    assert [t.split("/")[2] for t, _ in messages] == ["DBIRTH", "DDATA", "DDATA", "DDATA"]
    sizes = [len(spbp.decode(p).metrics) for _, p in messages[1:]]
    assert sizes == [4, 4, 2]
    assert [spbp.decode(p).seq for _, p in messages] == [1, 2, 3, 4]


def test_new_session_increments_bdseq_and_wraps() -> None:
    node = EdgeNode("g", "n")
    node.bd_seq = 255
    node.births(1)
    node.new_session()
    assert node.bd_seq == 0
    assert not node.born
    (death,) = spbp.decode(node.death(1)[1]).metrics
    assert (death.name, death.long_value) == ("bdSeq", 0)


def test_config_rejects_unknown_fields_and_bad_ids(tmp_path: Path) -> None:
    base = {"group_id": "plant1", "edge_node_id": "gw1"}
    cfg = SparkplugUplinkConfig(**base)
    assert (cfg.port, cfg.qos, cfg.effective_client_id) == (1883, 1, "shopfloor-plant1-gw1")
    with pytest.raises(ValidationError, match="extra"):
        SparkplugUplinkConfig(**base, hots="x")
    with pytest.raises(ValidationError, match="none of / \\+ #"):
        SparkplugUplinkConfig(group_id="plant/1", edge_node_id="gw1")
    with pytest.raises(ValidationError, match="device/signal"):
        SparkplugUplinkConfig(**base, datatypes={"running": "Boolean"})
    with pytest.raises(ValidationError, match="together"):
        SparkplugUplinkConfig(**base, tls={"cert_file": str(tmp_path / "c.pem")})
    with pytest.raises(ValidationError, match="not a readable file"):
        SparkplugUplinkConfig(**base, tls={"ca_file": str(tmp_path / "missing.pem")})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert SparkplugUplinkConfig(**base, tls={"ca_file": str(ca)}).tls is not None
