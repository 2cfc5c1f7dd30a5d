"""The Numenta Anomaly Benchmark's scoring rules, reimplemented on numpy arrays.

This follows NAB 1.x (``nab/sweeper.py``, ``nab/optimizer.py``, ``nab/runner.py``,
``config/profiles.json``) rule for rule:

- **Probationary period**: the first ``min(floor(0.15 * n), 0.15 * 5000)`` rows of each file are
  not scored at all (a window lying wholly inside it counts neither way).
- **Windows**: a label window ``[t1, t2]`` names data timestamps exactly. A row inside a window
  at index ``i`` is worth ``S(-(right - i + 1) / width) * tp / S(-1)`` as a detection, so the
  earliest detection in a window is worth ``tp`` and a late one close to 0. Only the best
  (earliest) detection of a window counts; a window without one costs ``-fn``.
- **False positives**: a detection outside every window costs ``S(|prev_right - i| /
  (prev_width - 1)) * fp`` (negative), measured from the end of the preceding window, or
  ``-fp`` when no window precedes it. ``S(x) = 2 / (1 + exp(5 x)) - 1``, and -1 beyond 3.
- **Threshold**: a row is a detection when its anomaly score is ``>=`` the threshold; one
  threshold per profile is chosen for the whole corpus, the one with the highest total score
  (among equal totals, the highest threshold, as NAB's stable sort does).
- **Normalisation**: ``100 * (raw - null) / (perfect - null)`` where *null* is the raw score of
  NAB's null detector (a constant 0.5, which at its best threshold detects nothing, so
  ``-fn`` per scorable window) and *perfect* is ``tp`` times the number of windows in the
  label file.

One deviation: NAB divides by ``prev_width - 1`` and so crashes on a one-row window followed by
a false positive; here the denominator is at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from shopfloor.core.errors import BadInput

PROBATION_PERCENT: Final = 0.15


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB application profile (``config/profiles.json``)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: Final[Mapping[str, Profile]] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


@dataclass(frozen=True)
class ScoredFile:
    """One data file's timestamps, a detector's scores for them and the file's label windows.

    ``timestamps`` are int64 (ns or any unit, as long as ``windows`` uses the same one);
    ``windows`` are ``(start, end)`` pairs that occur exactly in ``timestamps``, in time order.
    """

    name: str
    timestamps: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    windows: Sequence[tuple[int, int]]


@dataclass(frozen=True)
class ProfileResult:
    """The corpus result for one profile."""

    profile: str
    raw: float
    threshold: float
    normalized: float
    null_raw: float
    perfect: float


@dataclass(frozen=True)
class Sweep:
    """The scorable rows of one file: anomaly score, NAB row value and window (-1: none)."""

    scores: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    window: npt.NDArray[np.int64]
    n_windows: int


def scaled_sigmoid(x: float) -> float:
    """NAB's ``scaledSigmoid``: 2 * sigmoid(-5 x) - 1, and -1 for x > 3."""
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _scaled_sigmoid_array(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 2.0 / (1.0 + np.exp(5.0 * np.minimum(x, 3.0))) - 1.0
    out[x > 3.0] = -1.0
    return out


def probationary_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that NAB does not score."""
    return int(min(math.floor(percent * n_rows), percent * 5000))


def _window_indices(f: ScoredFile) -> list[tuple[int, int]]:
    ts = f.timestamps
    out: list[tuple[int, int]] = []
    prev_right = -1
    for start, end in f.windows:
        left = np.flatnonzero(ts == start)
        right = np.flatnonzero(ts == end)
        if left.size == 0 or right.size == 0:
            raise BadInput(f"{f.name}: window {start}..{end} names a missing timestamp", "windows")
        lo, hi = int(left[0]), int(right[0])
        if hi < lo or lo <= prev_right:
            raise BadInput(f"{f.name}: windows must be ordered and not overlap", "windows")
        out.append((lo, hi))
        prev_right = hi
    return out


def sweep_file(
    f: ScoredFile, profile: Profile, probation_percent: float = PROBATION_PERCENT
) -> Sweep:
    """Score every row of one file as NAB's ``Sweeper.calcSweepScore`` does."""
    n = len(f.timestamps)
    if len(f.scores) != n:
        raise BadInput(f"{f.name}: {len(f.scores)} scores for {n} timestamps", "scores")
    windows = _window_indices(f)
    idx = np.arange(n, dtype=np.float64)
    values = np.full(n, -profile.fp_weight)  # false positive with no window before it
    window = np.full(n, -1, dtype=np.int64)
    max_tp = scaled_sigmoid(-1.0)
    for k, (lo, hi) in enumerate(windows):
        width = float(hi - lo + 1)
        inside = slice(lo, hi + 1)
        pos = -(hi - idx[inside] + 1.0) / width
        values[inside] = _scaled_sigmoid_array(pos) * profile.tp_weight / max_tp
        window[inside] = k
        # Rows after this window, up to the next one, are false positives measured from it.
        end = windows[k + 1][0] if k + 1 < len(windows) else n
        after = slice(hi + 1, end)
        dist = np.abs(hi - idx[after]) / max(width - 1.0, 1.0)
        values[after] = _scaled_sigmoid_array(dist) * profile.fp_weight
    p = probationary_length(n, probation_percent)
    return Sweep(np.asarray(f.scores[p:], dtype=np.float64), values[p:], window[p:], len(windows))


def score_by_threshold(
    sweeps: Sequence[Sweep], profile: Profile
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Total score for every distinct threshold, highest threshold first (``calcScoreByThreshold``).

    The first pair is NAB's 1.1 threshold: nothing detected, every window a miss.
    """
    scores_l: list[npt.NDArray[np.float64]] = []
    values_l: list[npt.NDArray[np.float64]] = []
    window_l: list[npt.NDArray[np.int64]] = []
    offset = 0
    for s in sweeps:
        scores_l.append(s.scores)
        values_l.append(s.values)
        window_l.append(np.where(s.window >= 0, s.window + offset, -1))
        offset += s.n_windows
    scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
    values = np.concatenate(values_l) if values_l else np.zeros(0)
    window = np.concatenate(window_l) if window_l else np.zeros(0, dtype=np.int64)
    if not np.isfinite(scores).all():
        raise BadInput("anomaly scores must be finite numbers", "scores")
    # Windows with at least one scorable row start as misses.
    present = np.unique(window[window >= 0])
    base = -profile.fn_weight * float(present.size)
    order = np.argsort(-scores, kind="stable")
    s_sorted, v_sorted, w_sorted = scores[order], values[order], window[order]
    delta = np.where(w_sorted < 0, v_sorted, 0.0)
    # A window's part is the best value among its detected rows: add the rise of its running max.
    in_window = np.flatnonzero(w_sorted >= 0)
    if in_window.size:
        wids = w_sorted[in_window]
        by_window = in_window[np.argsort(wids, kind="stable")]
        wids_sorted = w_sorted[by_window]
        starts = np.flatnonzero(np.r_[True, wids_sorted[1:] != wids_sorted[:-1]])
        ends = np.r_[starts[1:], by_window.size]
        for a, b in zip(starts, ends, strict=True):
            rows = by_window[a:b]
            run = np.maximum.accumulate(np.r_[-profile.fn_weight, v_sorted[rows]])
            delta[rows] = np.diff(run)
    totals = base + np.cumsum(delta)
    # One entry per distinct score: the total after all rows with that score are detections.
    if scores.size == 0:
        return np.array([1.1]), np.array([base])
    last_of_group = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    thresholds = np.r_[1.1, s_sorted[last_of_group]]
    return thresholds, np.r_[base, totals[last_of_group]]


def best_threshold(sweeps: Sequence[Sweep], profile: Profile) -> tuple[float, float]:
    """(threshold, raw score) with the highest total, as NAB's optimiser picks it."""
    thresholds, totals = score_by_threshold(sweeps, profile)
    k = int(np.argmax(totals))  # first maximum: the highest threshold among ties
    return float(thresholds[k]), float(totals[k])


def score_corpus(
    files: Sequence[ScoredFile],
    profiles: Mapping[str, Profile] = PROFILES,
    probation_percent: float = PROBATION_PERCENT,
    n_windows: int | None = None,
) -> dict[str, ProfileResult]:
    """NAB's optimise + score + normalise steps over a corpus, one result per profile.

    ``n_windows`` is the window count of the label file (NAB's perfect score counts every
    window listed there); by default the windows of ``files``.
    """
    if not files:
        raise BadInput("no files to score", "files")
    total_windows = sum(len(f.windows) for f in files) if n_windows is None else n_windows
    out: dict[str, ProfileResult] = {}
    for name, profile in profiles.items():
        threshold, raw = best_threshold(
            [sweep_file(f, profile, probation_percent) for f in files], profile
        )
        null_files = [
            ScoredFile(f.name, f.timestamps, np.full(len(f.timestamps), 0.5), f.windows)
            for f in files
        ]
        _, null_raw = best_threshold(
            [sweep_file(f, profile, probation_percent) for f in null_files], profile
        )
        perfect = profile.tp_weight * total_windows
        out[name] = ProfileResult(
            name, raw, threshold, normalize(raw, null_raw, perfect), null_raw, perfect
        )
    return out


def normalize(raw: float, null_raw: float, perfect: float) -> float:
    """NAB's final score: 0 for the null detector, 100 for the perfect one."""
    if perfect == null_raw:
        raise BadInput("perfect and null scores are equal; nothing to normalise", "perfect")
    return 100.0 * (raw - null_raw) / (perfect - null_raw)
