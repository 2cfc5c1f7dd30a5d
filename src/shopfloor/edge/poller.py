"""One poller per device: a fixed time grid, a timeout per read, backoff for a dead device.

Polls are scheduled on a grid (start + k * period), not "period after the last poll ended", so
a slow read does not shift later polls and the mean period stays the configured one. A read that
fails or times out yields a bad-quality reading and the device is retried after an exponential
backoff (period * 2**failures, capped), so a dead device costs its shared connection one
timeout per backoff interval instead of one per period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shopfloor.edge.connector import ReadingSink
from shopfloor.edge.model import Reading, bad_reading

log = logging.getLogger(__name__)

__all__ = ["DevicePoller", "PollStats"]


@dataclass
class PollStats:
    polls: int = 0
    failures: int = 0  # consecutive
    failed_total: int = 0
    overruns: int = 0  # grid ticks skipped because a read took longer than the period
    last_ok_ns: int | None = None
    last_error: str | None = None
    last_duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "consecutive_failures": self.failures,
            "failed_total": self.failed_total,
            "overruns": self.overruns,
            "last_ok_ns": self.last_ok_ns,
            "last_error": self.last_error,
            "last_duration_s": round(self.last_duration_s, 6),
            "connected": self.failures == 0 and self.last_ok_ns is not None,
        }


class DevicePoller:
    """Calls ``read`` every ``period_s`` and hands each reading (or a bad one) to ``sink``."""

    def __init__(
        self,
        device: str,
        signals: tuple[str, ...],
        read: Callable[[], Awaitable[Reading]],
        sink: ReadingSink,
        *,
        period_s: float,
        timeout_s: float,
        backoff_max_s: float = 60.0,
    ) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.device = device
        self.signals = signals
        self._read = read
        self._sink = sink
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.backoff_max_s = backoff_max_s
        self.stats = PollStats()

    def _backoff(self) -> float:
        if self.stats.failures == 0:
            return 0.0
        return float(min(self.backoff_max_s, self.period_s * 2 ** min(self.stats.failures, 20)))

    async def poll_once(self) -> Reading:
        started = time.monotonic()
        ts = time.time_ns()
        try:
            reading = await asyncio.wait_for(self._read(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any library error: this device's points go bad, not the loop
            self.stats.failures += 1
            self.stats.failed_total += 1
            self.stats.last_error = (
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            )
            if self.stats.failures == 1:
                log.warning("device %s: read failed (%s)", self.device, self.stats.last_error)
            reading = bad_reading(self.device, self.signals, ts)
        else:
            if self.stats.failures:
                log.info(
                    "device %s: reads again after %d failures", self.device, self.stats.failures
                )
            self.stats.failures = 0
            self.stats.last_ok_ns = ts
        self.stats.polls += 1
        self.stats.last_duration_s = time.monotonic() - started
        return reading

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while True:
            reading = await self.poll_once()
            await self._sink(reading)
            tick += self.period_s
            now = loop.time()
            if now > tick:  # a read outlasted the period: skip the missed ticks, keep the grid
                missed = int((now - tick) / self.period_s) + 1
                self.stats.overruns += missed
                tick += missed * self.period_s
            backoff = self._backoff()
            if backoff:
                tick = max(tick, now + backoff)
            await asyncio.sleep(max(0.0, tick - loop.time()))
