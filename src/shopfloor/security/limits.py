"""Per-tenant rate limits (token buckets) and the stored-points quota.

Every figure comes from the tenant's ``tenant_limits`` row, where None means the platform
default from the settings. The row is cached per tenant for ``LIMITS_TTL_S`` seconds, so the
hot path (one API request, one ingest batch) touches no database: it is a dict lookup and a
little arithmetic under a lock.

Buckets live in this process: with several worker processes each one enforces the limit on
its own share of the traffic (docs/transport-and-limits.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from sqlalchemy import select

from shopfloor.core.errors import ShopfloorError
from shopfloor.registry.models import TenantLimits

if TYPE_CHECKING:
    from shopfloor.core.config import Settings
    from shopfloor.historian.backend import HistorianBackend
    from shopfloor.registry.service import Registry

LIMITS_TTL_S: Final = 5.0  # a changed limit takes effect within this (at once in-process)
RESEED_EVERY_S: Final = 60.0  # recount stored points from the historian at least this often
RESEED_ON_REFUSAL_S: Final = 5.0  # before refusing, recount if the count is older than this
API_BURST_FACTOR: Final = 2.0
API_BURST_MIN: Final = 10.0
QUOTA_RETRY_AFTER_S: Final = 60.0  # a quota frees up only with retention or a larger quota

Clock = Callable[[], float]


class TenantRef(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...


# ---- errors ---------------------------------------------------------------------------------


class LimitExceeded(ShopfloorError):
    """A 429: the caller should wait ``retry_after_s`` seconds (the Retry-After header)."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up (HTTP allows no fractions), at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimited(LimitExceeded):
    """Over a requests/s or points/s limit; retrying after the wait succeeds."""


class QuotaExceeded(LimitExceeded):
    """The tenant stores as many points as its quota allows; nothing of the batch was stored."""


# ---- token bucket ---------------------------------------------------------------------------


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``. A take bigger than the burst succeeds when
    the bucket is full and leaves it negative, so a large batch is slowed, not refused forever."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens: 0.0 when taken, else the seconds until the same take succeeds."""
        self.refill(now)
        need = min(n, self.burst)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate

    def retune(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)


def api_burst(rate: float) -> float:
    return max(rate * API_BURST_FACTOR, API_BURST_MIN)


def ingest_burst(rate: float) -> float:
    return rate  # one second's worth


# ---- limits ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    """A tenant's own figures; None takes the platform default."""

    api_requests_per_s: float | None = None
    ingest_points_per_s: float | None = None
    stored_points_max: int | None = None


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    api_requests_per_s: float
    ingest_points_per_s: float
    stored_points_max: int | None  # None: no quota
    overrides: LimitOverrides

    @property
    def api_burst(self) -> float:
        return api_burst(self.api_requests_per_s)

    @property
    def ingest_burst(self) -> float:
        return ingest_burst(self.ingest_points_per_s)


@dataclass(frozen=True, slots=True)
class Usage:
    stored_points: int | None  # None: not counted (no quota)
    api_tokens: float
    ingest_tokens: float


@dataclass(slots=True)
class _State:
    limits: EffectiveLimits
    loaded_at: float
    api: TokenBucket
    ingest: TokenBucket
    stored: int | None = None  # running count while a quota applies
    seeded_at: float = -math.inf


class TenantLimiter:
    """The rate limits and quotas of every tenant, in this process."""

    def __init__(
        self,
        registry: Registry,
        historian: HistorianBackend,
        settings: Settings,
        clock: Clock = time.monotonic,
    ) -> None:
        self.registry = registry
        self.historian = historian
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[int, _State] = {}

    # -- the hot path ---------------------------------------------------------------------

    def check_api(self, tenant: TenantRef) -> None:
        """Count one API request of ``tenant``; RateLimited when over its limit."""
        now = self.clock()
        st = self._state(tenant.id, now)
        with self._lock:
            wait = st.api.take(1.0, now)
        if wait:
            raise RateLimited(
                f"tenant {tenant.name!r} is over its API limit of "
                f"{_num(st.limits.api_requests_per_s)} requests/s; retry after {_secs(wait)} s",
                wait,
            )

    def admit_points(self, tenant: TenantRef, n: int) -> None:
        """Admit a batch of ``n`` points before anything of it is stored.

        QuotaExceeded when storing it would take the tenant over its quota, RateLimited when
        over its points/s limit; either way nothing is taken and nothing may be stored. An
        admitted batch is counted against the quota at once (so concurrent batches cannot
        overshoot it together); call :meth:`release_points` if storing it then fails.
        """
        now = self.clock()
        st = self._state(tenant.id, now)
        quota = st.limits.stored_points_max
        if quota is not None:
            if st.stored is None or now - st.seeded_at >= RESEED_EVERY_S:
                self._seed(tenant.id, st, now)
            if _over(st, n, quota) and now - st.seeded_at >= RESEED_ON_REFUSAL_S:
                self._seed(tenant.id, st, now)  # retention or overwrites may have made room
            if _over(st, n, quota):
                raise QuotaExceeded(
                    f"tenant {tenant.name!r} is at its quota of {_num(quota)} stored points "
                    f"({_num(st.stored or 0)} stored, this batch has {_num(n)}); nothing of "
                    "it was stored: shorten the retention, delete data or ask for a larger quota",
                    QUOTA_RETRY_AFTER_S,
                )
        with self._lock:
            wait = st.ingest.take(float(n), now)
            if not wait and st.stored is not None:
                st.stored += n
        if wait:
            raise RateLimited(
                f"tenant {tenant.name!r} is over its ingest limit of "
                f"{_num(st.limits.ingest_points_per_s)} points/s; retry after {_secs(wait)} s",
                wait,
            )

    def release_points(self, tenant_id: int, n: int) -> None:
        """An admitted batch of ``n`` points was not stored after all: uncount it."""
        st = self._states.get(tenant_id)
        if st is not None:
            with self._lock:
                if st.stored is not None:
                    st.stored = max(0, st.stored - n)

    # -- reading and changing limits ------------------------------------------------------

    def limits(self, tenant_id: int) -> EffectiveLimits:
        return self._state(tenant_id, self.clock()).limits

    def usage(self, tenant_id: int) -> Usage:
        """Current figures; counts the stored points when a quota applies."""
        now = self.clock()
        st = self._state(tenant_id, now)
        if st.limits.stored_points_max is not None and (
            st.stored is None or now - st.seeded_at >= RESEED_ON_REFUSAL_S
        ):
            self._seed(tenant_id, st, now)
        with self._lock:
            st.api.refill(now)
            st.ingest.refill(now)
            return Usage(st.stored, st.api.tokens, st.ingest.tokens)

    def set_limits(self, tenant_id: int, overrides: LimitOverrides) -> EffectiveLimits:
        """Store the tenant's own figures (None: default); effective here at once."""
        with self.registry._write() as s:
            row = s.get(TenantLimits, tenant_id)
            if row is None:
                row = TenantLimits(tenant_id=tenant_id)
                s.add(row)
            row.api_requests_per_s = overrides.api_requests_per_s
            row.ingest_points_per_s = overrides.ingest_points_per_s
            row.stored_points_max = overrides.stored_points_max
        now = self.clock()
        return self._reload(tenant_id, self._states.get(tenant_id), now).limits

    # -- internals ------------------------------------------------------------------------

    def _state(self, tenant_id: int, now: float) -> _State:
        st = self._states.get(tenant_id)
        if st is None or now - st.loaded_at >= LIMITS_TTL_S:
            st = self._reload(tenant_id, st, now)
        return st

    def _reload(self, tenant_id: int, st: _State | None, now: float) -> _State:
        limits = self._effective(self._overrides(tenant_id))
        with self._lock:
            if st is None:
                st = _State(
                    limits,
                    now,
                    TokenBucket.full(limits.api_requests_per_s, limits.api_burst, now),
                    TokenBucket.full(limits.ingest_points_per_s, limits.ingest_burst, now),
                )
                self._states[tenant_id] = st
                return st
            st.api.refill(now)
            st.ingest.refill(now)
            st.api.retune(limits.api_requests_per_s, limits.api_burst)
            st.ingest.retune(limits.ingest_points_per_s, limits.ingest_burst)
            if limits.stored_points_max is None:
                st.stored = None  # not counted without a quota; recounted when one is set
            st.limits, st.loaded_at = limits, now
            return st

    def _overrides(self, tenant_id: int) -> LimitOverrides:
        with self.registry._read() as s:
            row = s.scalar(select(TenantLimits).where(TenantLimits.tenant_id == tenant_id))
            if row is None:
                return LimitOverrides()
            return LimitOverrides(
                row.api_requests_per_s, row.ingest_points_per_s, row.stored_points_max
            )

    def _effective(self, o: LimitOverrides) -> EffectiveLimits:
        cfg = self.settings
        return EffectiveLimits(
            _or(o.api_requests_per_s, cfg.tenant_api_requests_per_s),
            _or(o.ingest_points_per_s, cfg.tenant_ingest_points_per_s),
            o.stored_points_max
            if o.stored_points_max is not None
            else cfg.tenant_stored_points_max,
            o,
        )

    def _seed(self, tenant_id: int, st: _State, now: float) -> None:
        count = stored_points(self.historian, tenant_id)
        with self._lock:
            st.stored, st.seeded_at = count, now


def stored_points(historian: HistorianBackend, tenant_id: int) -> int:
    """How many points the historian holds for the tenant (recent writes included)."""
    return historian.tenant_points(tenant_id)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _over(st: _State, n: int, quota: int) -> bool:
    return (st.stored or 0) + n > quota


def _num(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:,.2f}"


def _secs(wait: float) -> str:
    return f"{math.ceil(wait * 10) / 10:.1f}"  # rounded up: retrying at the figure succeeds
