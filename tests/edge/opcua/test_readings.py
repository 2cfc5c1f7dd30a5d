"""Notifications -> readings without a server: types, quality, timestamps, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from asyncua import ua

from shopfloor.core.quality import GOOD, UNCERTAIN
from shopfloor.edge.connectors.opcua import OpcUaConfig
from shopfloor.edge.connectors.opcua.readings import BAD_NOT_SUPPORTED, ItemTable, to_readings

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
T0_NS = 1767323045123456000


def table() -> ItemTable:
    cfg = OpcUaConfig.model_validate(
        {
            "endpoint": "opc.tcp://h:4840",
            "devices": [
                {
                    "name": "a",
                    "nodes": [{"node_id": f"i={i}", "signal": f"s{i}"} for i in range(4)],
                },
                {"name": "b", "nodes": [{"node_id": "i=9", "signal": "only"}]},
            ],
        }
    )
    return ItemTable.from_config(cfg)


def item(
    handle: int, value: object, vtype: ua.VariantType, ts: datetime | None = T0, status: int = 0
) -> ua.MonitoredItemNotification:
    dv = ua.DataValue(
        ua.Variant(value, vtype),
        StatusCode=ua.StatusCode(status),
        SourceTimestamp=ts,
        ServerTimestamp=T0 + timedelta(seconds=1),
    )
    return ua.MonitoredItemNotification(ClientHandle=handle, Value=dv)


def test_types_quality_and_grouping_by_device() -> None:
    t = table()
    items = [
        item(5, 7, ua.VariantType.Int32),  # device b
        item(1, 1.5, ua.VariantType.Double),
        item(2, True, ua.VariantType.Boolean, status=UNCERTAIN),
        item(3, "text", ua.VariantType.String),
        item(4, [1, 2], ua.VariantType.Int32),  # an array: not a reading value
        item(77, 1.0, ua.VariantType.Double),  # no such handle
    ]
    conv = to_readings(t, items, now_ns=1)
    assert conv.notifications == 6
    assert conv.duplicates == 0
    a, b = sorted(conv.readings, key=lambda r: r.device)
    assert a.device == "a"
    assert a.signals == ("s0", "s1", "s2", "s3")
    np.testing.assert_array_equal(a.values[:2], [1.5, 1.0])
    assert np.isnan(a.values[2:]).all()
    assert a.text == (None, None, "text", None)
    assert a.quality.tolist() == [GOOD, UNCERTAIN, GOOD, BAD_NOT_SUPPORTED]
    assert (a.ts_ns == T0_NS).all()
    assert a.source_ts is True
    assert (b.device, b.signals, b.values.tolist(), b.text) == ("b", ("only",), [7.0], None)
    assert t.reported.tolist() == [True] * 5


def test_repeated_source_timestamp_and_status_is_dropped() -> None:
    t = table()
    to_readings(t, [item(1, 1.0, ua.VariantType.Double)], now_ns=1)
    again = to_readings(
        t, [item(1, 1.0, ua.VariantType.Double), item(2, 2.0, ua.VariantType.Double)], now_ns=1
    )
    assert again.duplicates == 1
    assert [r.signals for r in again.readings] == [("s1",)]
    # same timestamp but a new status is news, not a duplicate
    changed = to_readings(t, [item(1, 1.0, ua.VariantType.Double, status=UNCERTAIN)], now_ns=1)
    assert changed.duplicates == 0
    assert len(changed.readings) == 1


def test_missing_source_timestamp_falls_back_to_server_time() -> None:
    t = table()
    conv = to_readings(t, [item(1, 1.0, ua.VariantType.Double, ts=None)], now_ns=1)
    (r,) = conv.readings
    assert r.source_ts is False
    assert r.ts_ns[0] == T0_NS + 1_000_000_000
