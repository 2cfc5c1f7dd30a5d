"""Rejected MQTT input, counted per (tenant, device) and reason, and a per-device flood gate.

A misbehaving device must not stop the ingest loop nor fill the log: each rejection is counted,
and logged at most once per device and reason every LOG_EVERY_S seconds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Final

log = logging.getLogger(__name__)

LOG_EVERY_S: Final = 10.0

# What went wrong, as counted (the keys of the stats).
TOO_LARGE: Final = "too_large"
MALFORMED: Final = "malformed"
INVALID: Final = "invalid"
RATE: Final = "rate_limited"
UNKNOWN_TOPIC: Final = "unknown_topic"
UNKNOWN_TENANT: Final = "unknown_tenant"
NO_SPARKPLUG_HOST: Final = "no_sparkplug_host"
FORBIDDEN_TOPIC: Final = "forbidden_topic"  # the embedded broker refused the PUBLISH


class BadInputCounters:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._logged: dict[tuple[str, str, str], float] = {}
        self._accepted: Counter[str] = Counter()  # per tenant

    def accept(self, tenant: str) -> None:
        self._accepted[tenant] += 1

    @property
    def accepted_messages(self) -> int:
        return sum(self._accepted.values())

    def reject(self, tenant: str, device: str, reason: str, detail: str) -> None:
        key = (tenant, device, reason)
        self._counts[key] += 1
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            log.warning(
                "MQTT message from device %s/%s rejected (%s, %d so far): %s",
                tenant,
                device,
                reason,
                self._counts[key],
                detail[:300],
            )

    def count(self, tenant: str, device: str, reason: str) -> int:
        return self._counts[(tenant, device, reason)]

    def snapshot(self, tenant: str | None = None) -> dict[str, object]:
        """All figures, or (``tenant`` given) only those of that tenant's devices."""
        rejected = [
            {"tenant": t, "device": d, "reason": r, "count": n}
            for (t, d, r), n in sorted(self._counts.items())
            if tenant is None or t == tenant
        ]
        accepted = self.accepted_messages if tenant is None else self._accepted[tenant]
        return {
            "accepted_messages": accepted,
            "rejected_messages": sum(
                n for (t, _, _), n in self._counts.items() if tenant is None or t == tenant
            ),
            "rejected": rejected,
        }


class FloodGate:
    """A token bucket per device: ``rate`` messages per second, bursts of up to one second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def allow(self, tenant: str, device: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get((tenant, device), (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[(tenant, device)] = (tokens, now)
            return False
        self._buckets[(tenant, device)] = (tokens - 1.0, now)
        return True
