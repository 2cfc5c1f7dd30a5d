"""A tenant's rate limits and quota: members read their own, the platform admin sets them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api.deps import get_platform, need, need_platform
from shopfloor.api.registry_routes import ADMIN, AUTH, E400, E404, E422
from shopfloor.security.limits import EffectiveLimits, LimitOverrides, TenantLimiter
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["limits"])

# Bounds keep the figures storable (stored_points_max is a BIGINT) and finite.
MAX_RATE = 1e12
MAX_POINTS = 2**63 - 1


class LimitsIn(BaseModel):
    """The tenant's own figures; null (or left out) takes the platform default."""

    model_config = ConfigDict(strict=True, extra="forbid")

    api_requests_per_s: float | None = Field(None, gt=0, le=MAX_RATE)
    ingest_points_per_s: float | None = Field(None, gt=0, le=MAX_RATE)
    stored_points_max: int | None = Field(None, gt=0, le=MAX_POINTS)


class LimitsOverridesOut(BaseModel):
    api_requests_per_s: float | None
    ingest_points_per_s: float | None
    stored_points_max: int | None


class UsageOut(BaseModel):
    stored_points: int | None = Field(description="Counted while a quota applies; else null.")
    api_requests_available: float = Field(description="Requests the API bucket holds now.")
    ingest_points_available: float = Field(description="Points the ingest bucket holds now.")


class LimitsOut(BaseModel):
    tenant: str
    api_requests_per_s: float
    api_burst: float = Field(description="Requests allowed at once: 2 s worth, at least 10.")
    ingest_points_per_s: float
    ingest_burst: float = Field(description="Points allowed at once: 1 s worth.")
    stored_points_max: int | None = Field(description="Quota of stored points; null: none.")
    overrides: LimitsOverridesOut = Field(description="The tenant's own figures; null: default.")
    usage: UsageOut | None = None


def get_limiter(platform: Annotated[Any, Depends(get_platform)]) -> TenantLimiter:
    limiter: TenantLimiter = platform.limits
    return limiter


Limiter = Annotated[TenantLimiter, Depends(get_limiter)]


def _out(tenant: str, limits: EffectiveLimits, usage: UsageOut | None = None) -> LimitsOut:
    o = limits.overrides
    return LimitsOut(
        tenant=tenant,
        api_requests_per_s=limits.api_requests_per_s,
        api_burst=limits.api_burst,
        ingest_points_per_s=limits.ingest_points_per_s,
        ingest_burst=limits.ingest_burst,
        stored_points_max=limits.stored_points_max,
        overrides=LimitsOverridesOut(
            api_requests_per_s=o.api_requests_per_s,
            ingest_points_per_s=o.ingest_points_per_s,
            stored_points_max=o.stored_points_max,
        ),
        usage=usage,
    )


@router.get(
    "/tenant/limits",
    summary="The caller's tenant: its rate limits, quota and current usage",
    responses=AUTH,
)
def own_limits(
    me: Annotated[Scope, Depends(need(Permission.REGISTRY_READ))], lim: Limiter
) -> LimitsOut:
    usage = lim.usage(me.tenant_id)
    return _out(
        me.tenant.name,
        lim.limits(me.tenant_id),
        UsageOut(
            stored_points=usage.stored_points,
            api_requests_available=usage.api_tokens,
            ingest_points_available=usage.ingest_tokens,
        ),
    )


@router.put(
    "/tenants/{name}/limits",
    summary="Set a tenant's rate limits and quota (platform admin)",
    description="Replaces all three figures; a null or missing one takes the platform default "
    "(settings tenant_api_requests_per_s, tenant_ingest_points_per_s, "
    "tenant_stored_points_max). Effective at once in this process, within 5 s in others.",
    responses={**E400, **ADMIN, **E404, **E422},
)
def set_limits(
    name: str,
    body: LimitsIn,
    _: Annotated[Any, Depends(need_platform(Permission.TENANTS_MANAGE))],
    platform: Annotated[Any, Depends(get_platform)],
    lim: Limiter,
) -> LimitsOut:
    tenant = platform.registry.get_tenant(name)  # NotFound names the tenant
    limits = lim.set_limits(
        tenant.id,
        LimitOverrides(body.api_requests_per_s, body.ingest_points_per_s, body.stored_points_max),
    )
    return _out(tenant.name, limits)
