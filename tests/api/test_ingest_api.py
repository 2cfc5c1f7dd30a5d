"""HTTP ingest and query through the real app, registry and historian."""

from __future__ import annotations

import time

import orjson
import pyarrow as pa
import pytest

from tests.api.conftest import Api

NOW_MS = (int(time.time()) - 600) * 1000  # ten minutes ago, whole second


def post(api: Api, doc: object, **kw: object):
    return api.client.post("/api/v1/ingest", content=orjson.dumps(doc), headers=api.headers, **kw)


def points(api: Api, *keys: str, **params: object) -> dict:
    r = api.client.get(
        "/api/v1/points",
        params={"signal": list(keys), "start": "-1d", "time_format": "ms", **params},
        headers=api.headers,
    )
    assert r.status_code == 200, r.text
    return {s["signal"]: s for s in r.json()["series"]}


def test_columnar_batch_round_trip(api: Api) -> None:
    ts = [NOW_MS + i * 1000 for i in range(3)]
    r = post(
        api, {"device": "press-01", "signal": ["temp"] * 3, "ts": ts, "value": [20.5, 21, 21.25]}
    )
    assert r.status_code == 200
    assert r.json() == {"accepted": 3}
    got = points(api, "press-01/temp")["press-01/temp"]
    assert got["ts"] == ts
    assert got["value"] == [20.5, 21.0, 21.25]


def test_row_batch_with_text_iso_time_and_quality(api: Api) -> None:
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW_MS / 1000)) + ".250+00:00"
    doc = {
        "device": "oven-1",
        "points": [
            {"signal": "mode", "ts": iso, "value": "HEATING"},
            {"signal": "temp", "ts": iso, "value": 180.5, "quality": "uncertain"},
        ],
    }
    assert post(api, doc).status_code == 200
    got = points(api, "oven-1/mode", "oven-1/temp")
    assert got["oven-1/mode"]["text"] == ["HEATING"]
    assert got["oven-1/mode"]["ts"] == [NOW_MS + 250]
    assert got["oven-1/temp"]["quality"] == [0x40000000]


def test_arrow_stream_ingest(api: Api) -> None:
    table = pa.table({"signal": ["a", "b"], "ts": [NOW_MS, NOW_MS], "value": [1.5, 2.5]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    r = api.client.post(
        "/api/v1/ingest?device=plc-7",
        content=bytes(sink.getvalue()),
        headers={**api.headers, "Content-Type": "application/vnd.apache.arrow.stream"},
    )
    assert r.status_code == 200, r.text
    assert points(api, "plc-7/b")["plc-7/b"]["value"] == [2.5]


def test_signals_are_auto_registered_with_their_type(api: Api) -> None:
    post(
        api, {"device": "d", "signal": ["count", "running"], "ts": [NOW_MS] * 2, "value": [5, True]}
    )
    types = {s.name: s.data_type for s in api.platform.registry.list_signals(api.tenant_id, "d")}
    assert types == {"count": "int", "running": "bool"}


BAD = [
    (b"{not json", 400, "body"),
    (b"[1, 2]", 422, "body"),
    (orjson.dumps({"device": "d", "signal": ["a"], "ts": [NOW_MS]}), 422, "value"),
    (
        orjson.dumps({"device": "d", "signal": ["a", "b"], "ts": [NOW_MS], "value": [1, 2]}),
        422,
        "ts",
    ),
    (orjson.dumps({"device": "d", "signal": ["a"], "ts": [NOW_MS], "value": [None]}), 422, "value"),
    (orjson.dumps({"device": "d", "signal": ["a"], "ts": [NOW_MS], "value": [[1]]}), 422, "value"),
    (
        orjson.dumps({"device": "d", "signal": ["a"], "ts": [NOW_MS], "value": [{"x": 1}]}),
        422,
        "value",
    ),
    (orjson.dumps({"device": "d", "signal": [1], "ts": [NOW_MS], "value": [1]}), 422, "signal"),
    (
        orjson.dumps({"device": "d", "signal": ["a"], "ts": [NOW_MS + 10**10], "value": [1]}),
        422,
        "ts",
    ),
    (orjson.dumps({"device": "d", "signal": ["a"], "ts": [5], "value": [1]}), 422, "ts"),
    (
        orjson.dumps({"device": "d", "signal": ["a"], "ts": ["2026-01-01T00:00:00"], "value": [1]}),
        422,
        "ts",
    ),
    (
        orjson.dumps(
            {"device": "d", "signal": ["a"], "ts": [NOW_MS], "value": [1], "quality": ["meh"]}
        ),
        422,
        "quality",
    ),
    (orjson.dumps({"signal": ["a"], "ts": [NOW_MS], "value": [1]}), 422, "signal"),
    (b'{"device": "d", "signal": ["a"], "ts": [%d], "value": [1e999]}' % NOW_MS, 400, "body"),
    (
        orjson.dumps({"device": "d", "points": [{"signal": "a", "ts": NOW_MS, "vlaue": 1}]}),
        422,
        "points",
    ),
    (
        orjson.dumps(
            {"device": "d", "signal": ["a"] * 5001, "ts": [NOW_MS] * 5001, "value": [1] * 5001}
        ),
        413,
        "signal",
    ),
    (
        b'{"device": "d", "signal": ["%s"], "ts": [1], "value": [1]}' % (b"x" * 1_000_001),
        413,
        "body",
    ),
    # found by fuzzing: these once gave a 500
    (orjson.dumps({"device": "d", "signal": ["a"], "ts": None, "value": [1]}), 422, "ts"),
    (
        orjson.dumps(
            {
                "device": "d",
                "points": [
                    {"signal": "a", "ts": NOW_MS, "value": 1, "quality": 1.5},
                    {"signal": "a", "ts": NOW_MS, "value": 2},
                ],
            }
        ),
        422,
        "points.quality",
    ),
    (orjson.dumps({"device": "d", "ts": [NOW_MS], "values": {"a": [[1, None]]}}), 422, "values.a"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_input_is_rejected_by_name_and_loses_nothing(
    api: Api, body: bytes, status: int, field: str
) -> None:
    assert (
        post(api, {"device": "d", "signal": ["kept"], "ts": [NOW_MS], "value": [7.0]}).status_code
        == 200
    )
    r = api.client.post("/api/v1/ingest", content=body, headers=api.headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] is not None
    assert err["field"].startswith(field)
    assert err["message"]
    assert points(api, "d/kept")["d/kept"]["value"] == [7.0]
    assert api.platform.historian.stats()["points_written"] == 1  # nothing of the bad batch


def test_bad_point_rejects_the_whole_batch(api: Api) -> None:
    r = post(
        api,
        {"device": "d", "signal": ["a", "a"], "ts": [NOW_MS, NOW_MS + 1000], "value": [1.0, None]},
    )
    assert r.status_code == 422
    assert "index 1" in r.json()["error"]["message"]
    assert api.platform.historian.stats()["points_written"] == 0


def test_unknown_api_key_and_missing_key(api: Api) -> None:
    doc = orjson.dumps({"device": "d", "signal": ["a"], "ts": [NOW_MS], "value": [1]})
    assert api.client.post("/api/v1/ingest", content=doc).status_code == 401
    r = api.client.post("/api/v1/ingest", content=doc, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401
    assert "unknown, expired or revoked credential" in r.json()["error"]["message"]


def test_unsupported_content_type(api: Api) -> None:
    r = api.client.post(
        "/api/v1/ingest", content=b"a,b", headers={**api.headers, "Content-Type": "text/csv"}
    )
    assert r.status_code == 415


def test_auto_registration_off_rejects_unknown_signals(api: Api) -> None:
    post(api, {"device": "d", "signal": ["known"], "ts": [NOW_MS], "value": [1]})
    api.platform.registry.update_tenant(api.tenant_id, auto_register_signals=False)
    r = post(api, {"device": "d", "signal": ["known", "new1"], "ts": [NOW_MS] * 2, "value": [1, 2]})
    assert r.status_code == 422
    assert "new1" in r.json()["error"]["message"]
    assert "known" not in r.json()["error"]["message"].split(":")[-1]
    assert (
        post(
            api, {"device": "d", "signal": ["known"], "ts": [NOW_MS + 1], "value": [2]}
        ).status_code
        == 200
    )


def test_text_sent_to_numeric_signal_is_rejected(api: Api) -> None:
    post(api, {"device": "d", "signal": ["temp"], "ts": [NOW_MS], "value": [1.5]})
    r = post(api, {"device": "d", "signal": ["temp"], "ts": [NOW_MS + 1000], "value": ["hot"]})
    assert r.status_code == 422
    assert "temp" in r.json()["error"]["message"]


def test_tenants_are_isolated(api: Api) -> None:
    post(api, {"device": "d", "signal": ["secret"], "ts": [NOW_MS], "value": [42]})
    _, other_key = api.platform.registry.create_tenant("other")
    r = api.client.get(
        "/api/v1/points",
        params={"signal": "d/secret", "start": "-1d"},
        headers={"X-API-Key": other_key},
    )
    assert r.status_code == 404


def test_downsample_latest_and_csv(api: Api) -> None:
    base = NOW_MS - NOW_MS % 60_000 - 120_000
    ts = [base + i * 10_000 for i in range(12)]  # two minutes at 10 s
    post(api, {"device": "m", "signal": ["v"] * 12, "ts": ts, "value": list(range(12))})
    r = api.client.get(
        "/api/v1/downsample",
        params={"signal": "m/v", "start": str(base), "end": str(base + 120_000), "interval": "1m",
                "agg": ["avg", "max", "count"], "time_format": "ms"},
        headers=api.headers,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    (s,) = r.json()["series"]
    assert s["bucket"] == [base, base + 60_000]
    assert s["avg"] == [2.5, 8.5]
    assert s["max"] == [5.0, 11.0]
    assert s["count"] == [6, 6]
    latest = api.client.get("/api/v1/latest", params={"device": "m"}, headers=api.headers).json()
    assert [(p["signal"], p["value"]) for p in latest["points"]] == [("m/v", 11.0)]
    csv = api.client.get(
        "/api/v1/points",
        params={"signal": "m/v", "start": "-1d", "format": "csv"},
        headers=api.headers,
    )
    lines = csv.text.strip().splitlines()
    assert lines[0] == '"signal","ts","value","text","quality"'
    assert len(lines) == 13


def test_query_parameter_errors_are_422(api: Api) -> None:
    post(api, {"device": "m", "signal": ["v"], "ts": [NOW_MS], "value": [1]})
    for params in (
        {"signal": "m/v", "interval": "fortnight"},
        {"signal": "m/v", "interval": "1s", "start": "-400d"},
        {"signal": "m/v", "interval": "1m", "start": "now", "end": "-1h"},
        {"signal": "m/v", "interval": "1m", "agg": "median"},
    ):
        r = api.client.get("/api/v1/downsample", params=params, headers=api.headers)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["message"]


def test_openapi_documents_ingest(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/ingest"]["post"]["requestBody"]["content"]
    assert "application/json" in body
    assert "application/vnd.apache.arrow.stream" in body


def test_frame_form_shared_timestamps(api: Api) -> None:
    ts = [NOW_MS, NOW_MS + 1000, NOW_MS + 2000]
    doc = {
        "device": "cnc-1",
        "ts": ts,
        "values": {"spindle": [1200, 1210, None], "temp": [20.5, 20.75, 21.0]},
    }
    r = post(api, doc)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 5}  # the null is no sample, not a point
    got = points(api, "cnc-1/spindle", "cnc-1/temp")
    assert got["cnc-1/spindle"]["ts"] == ts[:2]
    assert got["cnc-1/spindle"]["value"] == [1200.0, 1210.0]
    assert got["cnc-1/temp"]["value"] == [20.5, 20.75, 21.0]
    types = {
        s.name: s.data_type for s in api.platform.registry.list_signals(api.tenant_id, "cnc-1")
    }
    assert types == {"spindle": "int", "temp": "float"}


def test_frame_form_with_text_signal(api: Api) -> None:
    doc = {
        "device": "oven",
        "ts": [NOW_MS, NOW_MS + 1000],
        "values": {"mode": ["HEAT", "HOLD"], "on": [True, False]},
    }
    assert post(api, doc).status_code == 200
    got = points(api, "oven/mode", "oven/on")
    assert got["oven/mode"]["text"] == ["HEAT", "HOLD"]
    assert got["oven/on"]["value"] == [1.0, 0.0]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"a": [1.0]}, "values.a"),  # one value for two timestamps
        ({"a": "x"}, "values.a"),
        ({"a": [1, "x"]}, "values.a"),
        ({"a": [1, [2]]}, "values.a"),
        ({}, "values"),
    ],
)
def test_frame_form_errors_name_the_signal(api: Api, values: dict, field: str) -> None:
    r = post(api, {"device": "d", "ts": [NOW_MS, NOW_MS + 1000], "values": values})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert api.platform.historian.stats()["points_written"] == 0


def test_frame_numeric_looking_text_stays_text(api: Api) -> None:
    assert (
        post(api, {"device": "d", "ts": [NOW_MS], "values": {"code": ["1.5"]}}).status_code == 200
    )
    assert points(api, "d/code")["d/code"]["text"] == ["1.5"]


def test_row_integers_beyond_2_53_are_accepted(api: Api) -> None:
    r = post(api, {"device": "d", "points": [{"signal": "c", "ts": NOW_MS, "value": 2**53 + 1}]})
    assert r.status_code == 200, r.text


def test_absurd_query_times_are_422(api: Api) -> None:
    post(api, {"device": "m", "signal": ["v"], "ts": [NOW_MS], "value": [1]})
    for params in (
        {"interval": "inf"},
        {"interval": "1e300"},
        {"interval": "1m", "start": "-infs"},
        {"interval": "1m", "end": "99999999999999999999"},
    ):
        r = api.client.get(
            "/api/v1/downsample", params={"signal": "m/v", **params}, headers=api.headers
        )
        assert r.status_code == 422, (params, r.text)


def test_failed_read_without_value_is_stored_with_bad_quality(api: Api) -> None:
    # What an edge gateway sends when a poll failed: no value, bad quality.
    ts = [NOW_MS, NOW_MS + 1000, NOW_MS + 2000]
    doc = {
        "device": "plc-7",
        "signal": ["temp", "temp", "mode"],
        "ts": ts,
        "value": [20.5, None, None],
        "quality": [0, 0x80000000, 0x80000000],
    }
    r = post(api, doc)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3}
    got = points(api, "plc-7/temp", "plc-7/mode")
    assert got["plc-7/temp"]["value"] == [20.5, None]
    assert got["plc-7/temp"]["quality"] == [0, 0x80000000]
    assert got["plc-7/mode"]["quality"] == [0x80000000]
    # The failed read said nothing about the kind: a string signal takes a failed read too.
    assert (
        post(
            api, {"device": "plc-7", "points": [{"signal": "state", "ts": NOW_MS, "value": "RUN"}]}
        ).status_code
        == 200
    )
    failed = {
        "device": "plc-7",
        "signal": ["state"],
        "ts": [NOW_MS + 1000],
        "value": [None],
        "quality": ["bad"],
    }
    assert post(api, failed).status_code == 200
    assert points(api, "plc-7/state")["plc-7/state"]["quality"] == [0, 0x80000000]


@pytest.mark.parametrize("quality", [None, ["good", "good"], ["good", "uncertain"]])
def test_missing_value_needs_bad_quality(api: Api, quality: object) -> None:
    doc = {
        "device": "plc-8",
        "signal": ["a", "a"],
        "ts": [NOW_MS, NOW_MS + 1000],
        "value": [1.0, None],
    }
    if quality is not None:
        doc["quality"] = quality
    r = post(api, doc)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "value"
    assert "index 1" in err["message"]
    # Nothing of the batch was kept, not even the signal it would have registered.
    r = api.client.get("/api/v1/points", params={"signal": "plc-8/a"}, headers=api.headers)
    assert r.status_code == 404
