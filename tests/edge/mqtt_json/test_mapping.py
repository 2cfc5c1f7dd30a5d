"""JSON paths, payload mapping and config checks of the MQTT JSON connector (no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shopfloor.edge.connectors.mqtt_json.config import MqttJsonConfig, PayloadMapping
from shopfloor.edge.connectors.mqtt_json.jsonpath import JsonPath, PathMissing
from shopfloor.edge.connectors.mqtt_json.mapping import PayloadDecoder, PayloadError

DOC = {"a": {"b": [10, {"c": "x"}]}, "list": [[1, 2], [3, 4]], "n": None}


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("", DOC),
        ("$", DOC),
        ("a.b[0]", 10),
        ("$.a.b[1].c", "x"),
        ("list[1][0]", 3),
        ("list[-1][-1]", 4),
        ("n", None),
    ],
)
def test_paths_resolve(path: str, want: Any) -> None:
    assert JsonPath(path).get(DOC) == want


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a.x", "no key 'x'"),
        ("a.b[5]", "index 5 of 2 items"),
        ("a[0]", "looked up in an object"),
        ("list.x", "looked up in an array"),
        ("n.x", "looked up in null"),
    ],
)
def test_missing_paths_say_where(path: str, message: str) -> None:
    with pytest.raises(PathMissing, match=message):
        JsonPath(path).get(DOC)


@pytest.mark.parametrize("path", ["a..b", ".a", "a.[0]", "a[x]", "a]"])
def test_invalid_paths_are_rejected(path: str) -> None:
    with pytest.raises(ValueError, match="invalid JSON path"):
        JsonPath(path)


def decode(mapping: dict[str, Any], payload: bytes, arrival_ns: int = 5) -> Any:
    return PayloadDecoder(PayloadMapping.model_validate(mapping)).decode(payload, arrival_ns)


@pytest.mark.parametrize(
    ("unit", "raw", "ns"),
    [
        ("s", "1700000000", 1_700_000_000_000_000_000),
        ("s", "1700000000.001", 1_700_000_000_001_000_000),
        ("ms", "1700000000123", 1_700_000_000_123_000_000),
        ("ms", "1700000000123.5", 1_700_000_000_123_500_000),
        ("us", "1700000000123456", 1_700_000_000_123_456_000),
        ("ns", "1700000000123456789", 1_700_000_000_123_456_789),
        ("rfc3339", '"2023-11-14T22:13:20.123456Z"', 1_700_000_000_123_456_000),
        ("rfc3339", '"2023-11-14T17:13:20-05:00"', 1_700_000_000_000_000_000),
    ],
)
def test_timestamp_units(unit: str, raw: str, ns: int) -> None:
    m = {"timestamp": "t", "timestamp_unit": unit, "values": {"v": "v"}}
    out = decode(m, f'{{"t": {raw}, "v": 1}}'.encode())
    assert out.ts_ns == [ns]


@pytest.mark.parametrize(
    ("unit", "raw", "message"),
    [
        ("rfc3339", '"2023-11-14T22:13:20"', "no UTC offset"),
        ("rfc3339", '"last tuesday"', "not RFC 3339"),
        ("rfc3339", "1700000000", "not an RFC 3339 string"),
        ("ms", "true", "not a number of ms"),
        ("ns", "1700000000", "outside 2000..2100"),
    ],
)
def test_bad_timestamps(unit: str, raw: str, message: str) -> None:
    m = {"timestamp": "t", "timestamp_unit": unit, "values": {"v": "v"}}
    with pytest.raises(PayloadError, match=message):
        decode(m, f'{{"t": {raw}, "v": 1}}'.encode())


def test_without_a_timestamp_the_arrival_time_is_used() -> None:
    out = decode({"values": {"v": "v", "w": "w"}}, b'{"v": 2, "w": false}', arrival_ns=77)
    assert out.ts_ns == [77, 77]
    assert out.values == [2.0, 0.0]


def test_missing_values_are_counted_not_fatal() -> None:
    out = decode({"values": {"v": "v", "w": "w", "z": "deep.z"}}, b'{"v": 2}')
    assert out.signals == ["v"]
    assert out.missing == 2


@pytest.mark.parametrize(
    ("mapping", "patch"),
    [
        ({"values": {"v": "a"}, "numeric_fields": ""}, "exactly one of values or numeric_fields"),
        ({}, "exactly one of values or numeric_fields"),
        ({"values": {}}, "values is empty"),
        ({"values": {"v": "a..b"}}, "mapping.values.v: invalid JSON path"),
        ({"values": {"v": "a"}, "timestamp_unit": "minutes"}, "timestamp_unit"),
    ],
)
def test_mapping_errors_name_the_field(mapping: dict[str, Any], patch: str) -> None:
    with pytest.raises(ValidationError, match=patch):
        PayloadMapping.model_validate(mapping)


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ({"topic": "a/b"}, "either with device: or a {device} level"),
        ({"topic": "a/{device}", "device": "x"}, "either with device: or a {device} level"),
        ({"topic": "{device}/{device}"}, "only once"),
        ({"topic": "a/#/{device}"}, "must be the last level"),
        ({"topic": "a/dev{device}"}, "whole level"),
        ({"topic": "a/b+/{device}"}, "wildcard must be a whole level"),
    ],
)
def test_subscription_errors(sub: dict[str, Any], message: str) -> None:
    sub = {**sub, "mapping": {"values": {"v": "v"}}}
    with pytest.raises(ValidationError, match=message):
        MqttJsonConfig.model_validate({"subscriptions": [sub]})


def test_filters_and_command_checks() -> None:
    sub = {"topic": "f/+/{device}/t", "mapping": {"values": {"v": "v"}}}
    cfg = MqttJsonConfig.model_validate(
        {
            "subscriptions": [sub],
            "commands": {"topic": "f/{device}/set", "response_topic": "r/{device}"},
        }
    )
    assert cfg.subscriptions[0].filter == "f/+/+/t"
    assert cfg.subscriptions[0].device_level == 2
    assert cfg.commands is not None
    assert cfg.commands.topic_for("m1") == "f/m1/set"
    assert cfg.commands.response_filter == "r/+"
    with pytest.raises(ValidationError, match="needs a response_topic"):
        MqttJsonConfig.model_validate({"subscriptions": [sub], "commands": {"topic": "f/set"}})
    with pytest.raises(ValidationError, match="no wildcards"):
        MqttJsonConfig.model_validate(
            {"subscriptions": [sub], "commands": {"topic": "f/+/set", "confirm_by": "telemetry"}}
        )
    with pytest.raises(ValidationError, match="password needs a username"):
        MqttJsonConfig.model_validate({"subscriptions": [sub], "broker": {"password": "x"}})
