"""Per-tenant rate limits and quotas through the real app, registry and historian.

The limiter's clock is replaced by a hand-moved one, so bucket refills are exact and no test
sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.registry import TenantInfo
from shopfloor.security.limits import (
    LimitOverrides,
    QuotaExceeded,
    RateLimited,
    TenantLimiter,
    TokenBucket,
    stored_points,
)
from tests.security.conftest import Tenant

NOW_MS = (int(time.time()) - 600) * 1000


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(platform: Platform) -> Clock:
    c = Clock()
    platform.limits.clock = c
    return c


def batch(n: int, first: int = 0, device: str = "press-01") -> bytes:
    return orjson.dumps(
        {
            "device": device,
            "signal": ["temp"] * n,
            "ts": [NOW_MS + (first + i) * 1000 for i in range(n)],
            "value": [float(first + i) for i in range(n)],
        }
    )


def ingest(client: TestClient, t: Tenant, n: int, first: int = 0):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/ingest", content=batch(n, first), headers=t.key_headers)


def points_in_historian(platform: Platform, tenant: TenantInfo) -> int:
    """Counted through the historian's own query, not through the limiter."""
    ids = [s.id for s in platform.registry.list_signals(tenant.id)]
    if not ids:
        return 0
    return int(platform.historian.query_raw(tenant.id, ids, 0, 2**62).num_rows)


def set_limits(client: TestClient, admin: dict[str, str], name: str, **body: object):  # type: ignore[no-untyped-def]
    r = client.put(f"/api/v1/tenants/{name}/limits", json=body, headers=admin)
    assert r.status_code == 200, r.text
    return r.json()


# ---- the bucket alone -----------------------------------------------------------------------


def test_bucket_burst_refill_and_oversized_takes() -> None:
    b = TokenBucket.full(rate=10.0, burst=10.0, now=0.0)
    assert b.take(4, 0.0) == 0.0
    assert b.take(6, 0.0) == 0.0
    assert b.take(1, 0.0) == pytest.approx(0.1)  # empty: one token takes 0.1 s
    assert b.take(1, 0.1) == 0.0
    # Bigger than the burst: refused until full, then taken, leaving the bucket negative.
    assert b.take(25, 0.5) == pytest.approx(0.6)  # 4 tokens at 0.5 s, full at 1.1 s
    assert b.take(25, 1.1) == 0.0
    assert b.tokens == pytest.approx(-15.0)
    assert b.take(1, 1.1) == pytest.approx(1.6)


# ---- API requests/s -------------------------------------------------------------------------


def test_api_limit_burst_then_429_then_recovery(
    client: TestClient, acme: Tenant, admin_headers: dict[str, str], clock: Clock
) -> None:
    set_limits(client, admin_headers, "acme", api_requests_per_s=5)  # burst: the minimum, 10
    for _ in range(10):
        assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 200
    r = client.get("/api/v1/tenant", headers=acme.key_headers)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"  # 0.2 s, rounded up to whole seconds
    assert r.json() == {
        "error": {
            "type": "RateLimited",
            "message": "tenant 'acme' is over its API limit of 5 requests/s; retry after 0.2 s",
            "field": None,
        }
    }
    assert r.headers["cache-control"] == "no-store"  # the 429 carries the usual headers
    clock.t += 0.1
    assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 429
    clock.t += 0.1
    assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 200
    assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 429


def test_buckets_are_per_tenant(
    client: TestClient,
    make_tenant: Callable[[str], Tenant],
    admin_headers: dict[str, str],
    clock: Clock,
) -> None:
    a, b = make_tenant("tenant-a"), make_tenant("tenant-b")
    set_limits(client, admin_headers, "tenant-a", api_requests_per_s=1)
    set_limits(client, admin_headers, "tenant-b", api_requests_per_s=1)
    while client.get("/api/v1/assets", headers=a.key_headers).status_code == 200:
        pass
    assert client.get("/api/v1/assets", headers=a.key_headers).status_code == 429
    for _ in range(10):  # B's own burst, untouched by A's traffic
        assert client.get("/api/v1/assets", headers=b.key_headers).status_code == 200
    assert client.get("/api/v1/assets", headers=b.key_headers).status_code == 429
    # Platform-level callers have no tenant and no bucket.
    assert client.get("/api/v1/tenants", headers=admin_headers).status_code == 200


def test_requests_without_a_valid_credential_are_not_counted(
    client: TestClient, acme: Tenant, admin_headers: dict[str, str], clock: Clock
) -> None:
    set_limits(client, admin_headers, "acme", api_requests_per_s=1)
    for _ in range(20):
        assert client.get("/api/v1/tenant").status_code == 401
        bad = {"Authorization": "Bearer not-a-key"}
        assert client.get("/api/v1/tenant", headers=bad).status_code == 401
    assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 200


def test_429_is_documented_on_every_api_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    api = {p: ops for p, ops in schema["paths"].items() if p.startswith("/api/v1/")}
    assert api
    for path, ops in api.items():
        for method, op in ops.items():
            answer = op["responses"].get("429")
            assert answer is not None, f"{method.upper()} {path}"
            assert "Retry-After" in answer["headers"]
    assert "429" not in schema["paths"]["/health"]["get"]["responses"]


def test_default_limits_leave_ordinary_traffic_alone(client: TestClient, acme: Tenant) -> None:
    # 200 requests/s with a burst of 400 by default: a test suite's pace passes.
    for _ in range(60):
        assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 200
    limits = client.get("/api/v1/tenant/limits", headers=acme.key_headers).json()
    assert limits["api_requests_per_s"] == 200.0
    assert limits["api_burst"] == 400.0
    assert limits["ingest_points_per_s"] == 5_000_000.0
    assert limits["stored_points_max"] is None


# ---- ingest points/s ------------------------------------------------------------------------


def test_ingest_points_limit_refuses_before_storing(
    client: TestClient,
    acme: Tenant,
    admin_headers: dict[str, str],
    clock: Clock,
    platform: Platform,
) -> None:
    set_limits(client, admin_headers, "acme", ingest_points_per_s=10)  # burst: 10 points
    # Bigger than the burst, taken because the bucket is full: the bucket is now at -5.
    r = ingest(client, acme, 15)
    assert r.status_code == 200, r.text
    r = ingest(client, acme, 2, first=100)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"] == {
        "type": "RateLimited",
        "message": "tenant 'acme' is over its ingest limit of 10 points/s; retry after 0.7 s",
        "field": None,
    }
    assert points_in_historian(platform, acme.info) == 15  # nothing of the refused batch
    clock.t += 0.7
    assert ingest(client, acme, 2, first=100).status_code == 200
    assert points_in_historian(platform, acme.info) == 17


def test_api_requests_do_not_drain_the_ingest_bucket(
    client: TestClient, acme: Tenant, admin_headers: dict[str, str], clock: Clock
) -> None:
    set_limits(client, admin_headers, "acme", api_requests_per_s=1)
    for _ in range(10):
        client.get("/api/v1/tenant", headers=acme.key_headers)
    assert client.get("/api/v1/tenant", headers=acme.key_headers).status_code == 429
    assert ingest(client, acme, 3).status_code == 200  # ingest counts points, not requests


# ---- stored-points quota --------------------------------------------------------------------


def test_quota_exceeded_is_429_and_nothing_is_stored(
    client: TestClient,
    acme: Tenant,
    admin_headers: dict[str, str],
    clock: Clock,
    platform: Platform,
) -> None:
    assert ingest(client, acme, 4).status_code == 200  # before any quota
    set_limits(client, admin_headers, "acme", stored_points_max=6)
    assert ingest(client, acme, 2, first=10).status_code == 200  # 6 of 6
    r = ingest(client, acme, 1, first=20)
    assert r.status_code == 429
    body = r.json()["error"]
    assert body["type"] == "QuotaExceeded"
    assert "quota of 6 stored points (6 stored, this batch has 1)" in body["message"]
    assert r.headers["retry-after"] == "60"
    assert points_in_historian(platform, acme.info) == 6
    usage = client.get("/api/v1/tenant/limits", headers=acme.key_headers).json()["usage"]
    assert usage["stored_points"] == 6
    # A larger quota lets it in again.
    set_limits(client, admin_headers, "acme", stored_points_max=7)
    assert ingest(client, acme, 1, first=20).status_code == 200
    assert points_in_historian(platform, acme.info) == 7


def test_quota_is_recounted_after_retention_frees_room(
    client: TestClient,
    acme: Tenant,
    admin_headers: dict[str, str],
    clock: Clock,
    platform: Platform,
) -> None:
    set_limits(client, admin_headers, "acme", stored_points_max=5)
    assert ingest(client, acme, 5).status_code == 200
    assert ingest(client, acme, 1, first=50).status_code == 429
    removed = platform.historian.apply_retention(acme.info.id, NOW_MS * 1_000_000 + 3 * 10**9)
    assert removed == 3
    assert ingest(client, acme, 1, first=50).status_code == 429  # counted < 5 s ago
    clock.t += 5.0
    assert ingest(client, acme, 1, first=50).status_code == 200  # recounted: 2 + 1
    assert points_in_historian(platform, acme.info) == 3


def test_stored_points_counts_recent_and_compacted_points(
    client: TestClient, acme: Tenant, make_tenant: Callable[[str], Tenant], platform: Platform
) -> None:
    other = make_tenant("other")
    assert ingest(client, acme, 3).status_code == 200
    assert ingest(client, other, 2).status_code == 200
    assert stored_points(platform.historian, acme.info.id) == 3
    platform.historian.compact()
    assert ingest(client, acme, 4, first=10).status_code == 200
    assert stored_points(platform.historian, acme.info.id) == 7
    assert stored_points(platform.historian, other.info.id) == 2


def test_a_failed_write_gives_its_points_back(platform: Platform) -> None:
    info, _ = platform.registry.create_tenant("acme")
    limiter = TenantLimiter(platform.registry, platform.historian, platform.settings, Clock())
    limiter.set_limits(info.id, LimitOverrides(stored_points_max=3))
    limiter.admit_points(info, 3)
    limiter.release_points(info.id, 3)  # what ingest_body does when the write fails
    limiter.admit_points(info, 3)
    with pytest.raises(QuotaExceeded, match="quota of 3"):
        limiter.admit_points(info, 1)


# ---- MQTT telemetry -------------------------------------------------------------------------


def test_mqtt_telemetry_obeys_the_tenant_ingest_limit(platform: Platform) -> None:
    from shopfloor.ingest.mqtt import MqttService

    info, _ = platform.registry.create_tenant("acme")
    platform.limits.clock = clock = Clock()
    platform.limits.set_limits(info.id, LimitOverrides(ingest_points_per_s=2))
    service = MqttService(platform)  # its routing only; no broker is started

    async def scenario() -> None:
        msg = b'{"temp": 1.0, "rpm": 2.0, "load": 3.0}'  # 3 points > burst 2: taken when full
        await service.handle("sf/v1/acme/press-01/telemetry", msg, 1)
        await service.handle("sf/v1/acme/press-01/telemetry", b'{"temp": 4.0}', 1)
        clock.t += 1.5  # -1 + 3 = 2 tokens
        await service.handle("sf/v1/acme/press-01/telemetry", b'{"temp": 5.0}', 1)

    asyncio.run(scenario())
    assert points_in_historian(platform, info) == 4
    rejected = service.counters.snapshot()
    assert "rate_limited" in orjson.dumps(rejected).decode()
    assert service.counters.accepted_messages == 2


# ---- the limits routes ----------------------------------------------------------------------


def test_admin_sets_tenant_reads_tenant_cannot_set(
    client: TestClient, acme: Tenant, admin_headers: dict[str, str]
) -> None:
    out = set_limits(
        client,
        admin_headers,
        "acme",
        api_requests_per_s=50,
        ingest_points_per_s=1000.5,
        stored_points_max=10**9,
    )
    assert out["tenant"] == "acme"
    assert out["api_burst"] == 100.0
    assert out["ingest_burst"] == 1000.5
    assert out["overrides"] == {
        "api_requests_per_s": 50.0,
        "ingest_points_per_s": 1000.5,
        "stored_points_max": 10**9,
    }
    mine = client.get("/api/v1/tenant/limits", headers=acme.key_headers)
    assert mine.status_code == 200
    got = mine.json()
    assert (got["api_requests_per_s"], got["stored_points_max"]) == (50.0, 10**9)
    assert got["usage"]["stored_points"] == 0
    assert got["usage"]["api_requests_available"] <= 100.0
    r = client.put("/api/v1/tenants/acme/limits", json={}, headers=acme.key_headers)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "Forbidden"
    # Null or left out: back to the platform defaults.
    reset = set_limits(client, admin_headers, "acme", api_requests_per_s=None)
    assert reset["api_requests_per_s"] == 200.0
    assert reset["stored_points_max"] is None
    assert reset["overrides"]["stored_points_max"] is None


def test_limits_routes_check_their_input(
    client: TestClient, acme: Tenant, admin_headers: dict[str, str]
) -> None:
    put = lambda body: client.put("/api/v1/tenants/acme/limits", json=body, headers=admin_headers)  # noqa: E731
    for body, field in [
        ({"api_requests_per_s": 0}, "api_requests_per_s"),
        ({"api_requests_per_s": "5"}, "api_requests_per_s"),
        ({"ingest_points_per_s": True}, "ingest_points_per_s"),
        ({"stored_points_max": 1.5}, "stored_points_max"),
        ({"stored_points_max": 2**63}, "stored_points_max"),
        ({"burst": 5}, "burst"),
    ]:
        r = put(body)
        assert r.status_code == 422, body
        assert r.json()["error"]["field"] == field
    r = client.put("/api/v1/tenants/nobody/limits", json={}, headers=admin_headers)
    assert r.status_code == 404
    assert client.get("/api/v1/tenant/limits").status_code == 401


def test_limits_from_settings_defaults(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        mqtt_mode="off",
        tenant_api_requests_per_s=3,
        tenant_stored_points_max=2,
    )
    plat = Platform(settings)
    try:
        info, key = plat.registry.create_tenant("acme")
        with TestClient(create_app(platform=plat)) as c:
            got = c.get("/api/v1/tenant/limits", headers={"Authorization": f"Bearer {key}"})
            assert got.json()["api_burst"] == 10.0
            assert got.json()["stored_points_max"] == 2
            headers = {"Authorization": f"Bearer {key}"}
            r = c.post("/api/v1/ingest", content=batch(3), headers=headers)
            assert r.status_code == 429
            assert r.json()["error"]["type"] == "QuotaExceeded"
            assert points_in_historian(plat, info) == 0
    finally:
        plat.close()


def test_rate_limited_is_a_shopfloor_error_with_retry_after() -> None:
    exc = RateLimited("x", 2.01)
    assert exc.status_code == 429
    assert exc.retry_after_header == "3"
    assert RateLimited("x", 0.0).retry_after_header == "1"
