"""Alarm-load figures after ISA-18.2 §16 and EEMUA 191: alarms per 10 minutes, floods, bad actors.

Only *annunciations* count (an event that put an alarm into unacknowledged active: a new
alarm, a re-alarm, or a return from shelving / suppression / out of service while the condition
is active). Acknowledgements, clears and changes hidden by shelving are operator load of another
kind and do not count toward a flood.

Buckets are aligned to multiples of the bucket length since the Unix epoch, like historian
downsampling, so figures from two queries over overlapping times line up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.core.errors import BadInput
from shopfloor.rules.alarms import AlarmEvent

__all__ = [
    "FLOOD_THRESHOLD",
    "TEN_MINUTES_NS",
    "AreaFlood",
    "BadActor",
    "bad_actors",
    "flood_figures",
]

TEN_MINUTES_NS: Final = 600 * 1_000_000_000
# EEMUA 191 / ISA-18.2: more than 10 alarms in 10 minutes for one operator is a flood.
FLOOD_THRESHOLD: Final = 10


@dataclass(frozen=True, slots=True)
class AreaFlood:
    area: str
    first_bucket_ns: int  # start of counts[0]
    bucket_ns: int
    counts: tuple[int, ...]  # annunciations per bucket, quiet buckets included (zeros)
    total: int
    peak: int
    peak_bucket_ns: int | None  # start of the first bucket holding the peak; None if no alarms
    mean: float  # alarms per bucket over the window
    flood_buckets: int  # buckets with more than the threshold
    flood_share: float  # flood_buckets / number of buckets (0.0 for an empty window)

    def bucket_starts(self) -> tuple[int, ...]:
        return tuple(self.first_bucket_ns + i * self.bucket_ns for i in range(len(self.counts)))


@dataclass(frozen=True, slots=True)
class BadActor:
    alarm_id: str
    area: str
    count: int
    share: float  # of all annunciations in the window


def flood_figures(
    events: Iterable[AlarmEvent],
    *,
    start: int | None = None,
    end: int | None = None,
    areas: Iterable[str] = (),
    bucket_ns: int = TEN_MINUTES_NS,
    threshold: int = FLOOD_THRESHOLD,
) -> dict[str, AreaFlood]:
    """Per area: annunciations per bucket over one common window, the peak and the flood share.

    The window is ``[start, end)`` widened to whole buckets; without bounds it runs from the
    bucket of the first annunciation to that of the last. Every area shares the window so their
    shares compare. ``areas`` adds areas that should appear even when quiet (all zeros).
    """
    if bucket_ns <= 0:
        raise BadInput(f"bucket length must be positive, not {bucket_ns}", "bucket_ns")
    if threshold < 0:
        raise BadInput(f"flood threshold must be >= 0, not {threshold}", "threshold")
    if start is not None and end is not None and end <= start:
        raise BadInput(f"end {end} is not after start {start}", "end")
    ann = [
        e
        for e in events
        if e.annunciated and (start is None or e.ts >= start) and (end is None or e.ts < end)
    ]
    names = sorted({e.area for e in ann} | set(areas))
    if not names:
        return {}
    if not ann and (start is None or end is None):
        # No alarms and an open window: there is no span to count over.
        return {a: _figures(a, 0, bucket_ns, np.zeros(0, np.int64), threshold) for a in names}
    ts = np.fromiter((e.ts for e in ann), dtype=np.int64, count=len(ann))
    lo = ts.min() if start is None else start
    hi = ts.max() + 1 if end is None else end
    first = (int(lo) // bucket_ns) * bucket_ns
    n_buckets = -(-(int(hi) - first) // bucket_ns)  # ceil: the last partial bucket counts
    idx = (ts - first) // bucket_ns
    row = {a: i for i, a in enumerate(names)}
    area_of = np.fromiter((row[e.area] for e in ann), dtype=np.int64, count=len(ann))
    # One bincount over (area, bucket) pairs instead of a loop per area.
    grid = np.bincount(area_of * n_buckets + idx, minlength=len(names) * n_buckets)
    grid = grid.reshape(len(names), n_buckets)
    return {a: _figures(a, first, bucket_ns, grid[i], threshold) for i, a in enumerate(names)}


def _figures(
    area: str, first: int, bucket_ns: int, counts: npt.NDArray[np.int64], threshold: int
) -> AreaFlood:
    n = len(counts)
    total = int(counts.sum())
    peak = int(counts.max()) if n else 0
    floods = int((counts > threshold).sum())
    return AreaFlood(
        area=area,
        first_bucket_ns=first,
        bucket_ns=bucket_ns,
        counts=tuple(int(c) for c in counts),
        total=total,
        peak=peak,
        peak_bucket_ns=first + int(np.argmax(counts)) * bucket_ns if total else None,
        mean=total / n if n else 0.0,
        flood_buckets=floods,
        flood_share=floods / n if n else 0.0,
    )


def bad_actors(
    events: Iterable[AlarmEvent],
    n: int = 10,
    *,
    start: int | None = None,
    end: int | None = None,
    area: str | None = None,
) -> list[BadActor]:
    """The ``n`` alarms annunciated most often, most first (ties by alarm id)."""
    if n < 1:
        raise BadInput(f"n must be at least 1, not {n}", "n")
    counts: Counter[str] = Counter()
    area_of: dict[str, str] = {}
    for e in events:
        if (
            e.annunciated
            and (start is None or e.ts >= start)
            and (end is None or e.ts < end)
            and (area is None or e.area == area)
        ):
            counts[e.alarm_id] += 1
            area_of[e.alarm_id] = e.area
    total = sum(counts.values())
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [BadActor(a, area_of[a], c, c / total) for a, c in top]
