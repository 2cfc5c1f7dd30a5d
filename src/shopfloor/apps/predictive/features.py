"""Run-to-failure histories, per-regime normalisation and trailing-window features.

A :class:`Run` is one machine (unit) observed from new: a time index (cycles or integer-ns
timestamps), a matrix of signals with names, and optional operating-setting columns. Nothing
here knows about C-MAPSS: any signal names and any number of them work.

:class:`Normaliser` learns, from training runs only, which operating regime each row is in
(KMeans over the standardised settings; the number of regimes is found from the data), the
mean and standard deviation of each signal within each regime, and which signals are constant
in training (those are dropped). Engines that fly in six flight conditions (C-MAPSS FD002 and
FD004) only show their wear once the regime's level is taken out.

:func:`window_features` turns a normalised run into one feature row per time step, from the
trailing window ending at that step (shorter at the start of a run): last value, mean, std,
least-squares slope, min and max per window length, an exponentially smoothed value, and the
time since the run started. Everything is computed with cumulative sums and strided views, so
the cost is a few numpy passes over the run, not a Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from shopfloor.core.errors import BadInput

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# A signal whose within-regime spread is below this (relative to its level) is constant.
_CONSTANT_REL_STD = 1e-9
_REGIME_SAMPLE = 5000


@dataclass(frozen=True)
class Run:
    """One unit's history from new; ``failed`` is True when the last row is the failure.

    ``time`` is increasing; the remaining useful life is expressed in its units (cycles for
    C-MAPSS). ``signals`` has one row per time step and one column per name in
    ``signal_names``; ``settings`` (operating conditions), when given, likewise.
    """

    unit: str
    time: F64
    signals: F64
    signal_names: tuple[str, ...]
    settings: F64 | None = None
    setting_names: tuple[str, ...] = ()
    failed: bool = True

    def __post_init__(self) -> None:
        n = self.time.shape[0] if self.time.ndim == 1 else -1
        if n < 1:
            raise BadInput(f"run {self.unit!r}: time must be a non-empty 1-D array", "time")
        if np.any(np.diff(self.time) <= 0):
            raise BadInput(f"run {self.unit!r}: time must be strictly increasing", "time")
        _check_matrix(self.unit, "signals", self.signals, n, self.signal_names)
        if self.settings is not None:
            _check_matrix(self.unit, "settings", self.settings, n, self.setting_names)
        elif self.setting_names:
            raise BadInput(f"run {self.unit!r}: setting_names given without settings", "settings")

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def rul(self) -> F64:
        """True remaining life at each step: time of the last row minus time of the row."""
        if not self.failed:
            raise BadInput(
                f"run {self.unit!r} did not end in failure: its RUL is unknown", "failed"
            )
        return np.asarray(self.time[-1] - self.time, dtype=np.float64)

    def head(self, n: int) -> Run:
        """The first ``n`` rows, as an unfinished run (what a live machine looks like)."""
        s = None if self.settings is None else self.settings[:n]
        return Run(
            self.unit,
            self.time[:n],
            self.signals[:n],
            self.signal_names,
            s,
            self.setting_names,
            failed=False,
        )


def _check_matrix(unit: str, what: str, m: F64, n: int, names: tuple[str, ...]) -> None:
    if m.ndim != 2 or m.shape[0] != n:
        raise BadInput(f"run {unit!r}: {what} must have shape ({n}, k), got {m.shape}", what)
    if m.shape[1] != len(names) or len(set(names)) != len(names):
        raise BadInput(f"run {unit!r}: {what} needs {m.shape[1]} distinct names", what)
    if not np.all(np.isfinite(m)):
        raise BadInput(f"run {unit!r}: {what} contains NaN or infinite values", what)


def capped_rul(rul: F64, cap: float) -> F64:
    """The piecewise-linear target: flat at ``cap`` while the unit is healthy, then linear."""
    if not cap > 0:
        raise BadInput(f"the RUL cap must be positive, got {cap}", "cap")
    return np.minimum(rul, cap)


# --- normalisation by operating regime -------------------------------------------------------


@dataclass
class Normaliser:
    """Per-regime z-scores of the signals that vary in training.

    ``max_regimes`` bounds the search; ``n_regimes`` forces a number (1 = no regimes).
    """

    max_regimes: int = 10
    n_regimes: int | None = None
    # learnt by fit()
    signal_names: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    setting_names: tuple[str, ...] = ()
    setting_mean: F64 = field(default_factory=lambda: np.zeros(0))
    setting_scale: F64 = field(default_factory=lambda: np.ones(0))
    centres: F64 = field(default_factory=lambda: np.zeros((1, 0)))
    mean: F64 = field(default_factory=lambda: np.zeros((1, 0)))
    std: F64 = field(default_factory=lambda: np.ones((1, 0)))

    def fit(self, runs: list[Run]) -> Normaliser:
        if not runs:
            raise BadInput("no training runs", "runs")
        self.signal_names = runs[0].signal_names
        self.setting_names = runs[0].setting_names
        for r in runs:
            if r.signal_names != self.signal_names or r.setting_names != self.setting_names:
                raise BadInput(f"run {r.unit!r} has other signal or setting names", "runs")
        x = np.concatenate([r.signals for r in runs])
        regime = self._fit_regimes(runs)
        k = self.centres.shape[0]
        mean = np.zeros((k, x.shape[1]))
        std = np.ones((k, x.shape[1]))
        for j in range(k):
            rows = x[regime == j]
            mean[j] = rows.mean(axis=0)
            std[j] = rows.std(axis=0)
        constant = np.all(std <= _CONSTANT_REL_STD * np.maximum(1.0, np.abs(mean)), axis=0)
        if constant.all():
            raise BadInput("every signal is constant in the training runs", "signals")
        keep = ~constant
        self.kept = tuple(n for n, c in zip(self.signal_names, constant, strict=True) if not c)
        self.dropped = tuple(n for n, c in zip(self.signal_names, constant, strict=True) if c)
        # A signal constant in one regime only: divide by 1 there rather than by zero.
        s = std[:, keep]
        self.mean, self.std = mean[:, keep], np.where(s > 0, s, 1.0)
        return self

    def _fit_regimes(self, runs: list[Run]) -> I64:
        n_rows = sum(len(r) for r in runs)
        if runs[0].settings is None or self.n_regimes == 1:
            self._single_regime()
            return np.zeros(n_rows, dtype=np.int64)
        s = np.concatenate([r.settings for r in runs if r.settings is not None])
        mu, sd = s.mean(axis=0), s.std(axis=0)
        self.setting_mean, self.setting_scale = mu, np.where(sd > 0, sd, 1.0)
        z = (s - self.setting_mean) / self.setting_scale
        from sklearn.cluster import KMeans  # heavy import, only when there are settings

        # Regimes are found on a sample of rows: they are tight clusters, and KMeans over every
        # row of a large fleet for each k tried would dominate the training time.
        rng = np.random.default_rng(0)
        zs = z if len(z) <= _REGIME_SAMPLE else z[rng.choice(len(z), _REGIME_SAMPLE, replace=False)]

        def cluster(k: int) -> tuple[F64, float]:
            km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(zs)
            return np.asarray(km.cluster_centers_, dtype=np.float64), float(km.inertia_)

        if self.n_regimes is not None:
            self.centres = cluster(self.n_regimes)[0]
        else:
            self.centres = self._choose_regimes(zs, cluster)
        return self.regimes(s)

    def _choose_regimes(self, z: F64, cluster: Any) -> F64:
        # Operating regimes are tight, well separated clusters: the smallest k whose clusters
        # leave under 1% of the spread is the number of regimes. Noise around one operating
        # point (C-MAPSS FD001) never gets there, and stays one regime.
        total = float(((z - z.mean(axis=0)) ** 2).sum())
        limit = min(self.max_regimes, len(np.unique(np.round(z, 6), axis=0)))
        for k in range(2, limit + 1):
            centres, inertia = cluster(k)
            if inertia <= 0.01 * total:
                return np.asarray(centres, dtype=np.float64)
        self._single_regime()
        return self.centres

    def _single_regime(self) -> None:
        m = 0 if not self.setting_names else len(self.setting_names)
        self.centres = np.zeros((1, m))
        self.setting_mean, self.setting_scale = np.zeros(m), np.ones(m)

    def regimes(self, settings: F64 | None) -> I64:
        """The regime of each row: the nearest centre in standardised setting space."""
        if self.centres.shape[0] == 1:
            n = 0 if settings is None else settings.shape[0]
            return np.zeros(n, dtype=np.int64)
        if settings is None:
            raise BadInput("this model needs the operating settings of each row", "settings")
        z = (settings - self.setting_mean) / self.setting_scale
        d = ((z[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        return np.asarray(d.argmin(axis=1), dtype=np.int64)

    def transform(self, run: Run) -> F64:
        """The run's kept signals as z-scores within their regime, shape (len(run), len(kept))."""
        if run.signal_names != self.signal_names:
            raise BadInput(
                f"run {run.unit!r} has signals {list(run.signal_names)}, "
                f"the model was trained on {list(self.signal_names)}",
                "signal_names",
            )
        keep = np.isin(np.asarray(self.signal_names), np.asarray(self.kept))
        regime = self.regimes(run.settings) if self.centres.shape[0] > 1 else None
        x = run.signals[:, keep]
        if regime is None:
            return np.asarray((x - self.mean[0]) / self.std[0], dtype=np.float64)
        return np.asarray((x - self.mean[regime]) / self.std[regime], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_regimes": self.max_regimes,
            "n_regimes": self.n_regimes,
            "signal_names": list(self.signal_names),
            "kept": list(self.kept),
            "dropped": list(self.dropped),
            "setting_names": list(self.setting_names),
            "setting_mean": self.setting_mean.tolist(),
            "setting_scale": self.setting_scale.tolist(),
            "centres": self.centres.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normaliser:
        m = len(d["setting_names"])
        return cls(
            max_regimes=int(d["max_regimes"]),
            n_regimes=d["n_regimes"],
            signal_names=tuple(d["signal_names"]),
            kept=tuple(d["kept"]),
            dropped=tuple(d["dropped"]),
            setting_names=tuple(d["setting_names"]),
            setting_mean=np.asarray(d["setting_mean"], dtype=np.float64),
            setting_scale=np.asarray(d["setting_scale"], dtype=np.float64),
            centres=np.asarray(d["centres"], dtype=np.float64).reshape(len(d["centres"]), m),
            mean=np.asarray(d["mean"], dtype=np.float64).reshape(-1, len(d["kept"])),
            std=np.asarray(d["std"], dtype=np.float64).reshape(-1, len(d["kept"])),
        )


# --- window features -------------------------------------------------------------------------

WINDOW_STATS = ("mean", "std", "slope", "min", "max")


@dataclass(frozen=True)
class FeatureSpec:
    """Which trailing-window statistics to compute; windows are counted in rows."""

    windows: tuple[int, ...] = (10, 30)
    stats: tuple[str, ...] = WINDOW_STATS
    ewm_alpha: float = 0.1
    time_since_start: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.stats) - set(WINDOW_STATS)
        if unknown or not self.stats:
            raise BadInput(f"stats must be some of {WINDOW_STATS}, got {self.stats}", "stats")
        if not self.windows or any(w < 2 for w in self.windows):
            raise BadInput(f"windows must be 2 rows or more, got {self.windows}", "windows")
        if not 0.0 < self.ewm_alpha <= 1.0:
            raise BadInput(f"ewm_alpha must be in (0, 1], got {self.ewm_alpha}", "ewm_alpha")

    def names(self, signals: tuple[str, ...]) -> list[str]:
        """Column names of :func:`window_features`, in order."""
        out: list[str] = []
        for s in signals:
            out.append(f"{s}.last")
            out.append(f"{s}.ewm")
            for w in self.windows:
                out += [f"{s}.{stat}{w}" for stat in self.stats]
        if self.time_since_start:
            out.append("time_since_start")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": list(self.windows),
            "stats": list(self.stats),
            "ewm_alpha": self.ewm_alpha,
            "time_since_start": self.time_since_start,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(
            windows=tuple(int(w) for w in d["windows"]),
            stats=tuple(d["stats"]),
            ewm_alpha=float(d["ewm_alpha"]),
            time_since_start=bool(d["time_since_start"]),
        )


def window_features(x: F64, time: F64, spec: FeatureSpec) -> F64:
    """Feature matrix (n, len(spec.names(...))) from signals ``x`` (n, k) of one run.

    Row i uses rows max(0, i - w + 1) .. i for window w. The slope is per row (least squares
    of the value on the row index), so it does not depend on the unit of ``time``.
    """
    n = x.shape[0]
    per_signal: list[F64] = [x, _ewm(x, spec.ewm_alpha)]
    for w in spec.windows:
        stats = _window_stats(x, w, spec.stats)
        per_signal += [stats[name] for name in spec.stats]
    # (n, k, stats) -> (n, k * stats): the stats of one signal sit next to each other
    stacked = np.stack(per_signal, axis=2).reshape(n, -1)
    if spec.time_since_start:
        stacked = np.hstack([stacked, (time - time[0])[:, None]])
    return np.asarray(stacked, dtype=np.float64)


def _ewm(x: F64, alpha: float) -> F64:
    # y[i] = alpha * x[i] + (1 - alpha) * y[i-1], starting from y[0] = x[0]
    zi = (1.0 - alpha) * x[:1]
    y, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], x, axis=0, zi=zi)
    return np.asarray(y, dtype=np.float64)


def _window_stats(x: F64, w: int, wanted: tuple[str, ...]) -> dict[str, F64]:
    """The ``wanted`` statistics (of :data:`WINDOW_STATS`) over the trailing window of ``w`` rows."""
    n = x.shape[0]
    idx = np.arange(n, dtype=np.float64)[:, None]
    m = np.minimum(idx + 1.0, w)  # rows in each window

    def trailing_sum(v: F64) -> F64:
        c = np.cumsum(np.vstack([np.zeros((1, v.shape[1])), v]), axis=0)
        lo = np.maximum(np.arange(n) + 1 - w, 0)
        return np.asarray(c[1:] - c[lo], dtype=np.float64)

    sx = trailing_sum(x)
    sxx = trailing_sum(x * x)
    # Least squares on a window-local index u = 0..m-1 keeps the sums small (no cancellation).
    start = np.maximum(idx - w + 1.0, 0.0)
    sux = trailing_sum(x * idx) - start * sx
    su = m * (m - 1.0) / 2.0
    suu = (m - 1.0) * m * (2.0 * m - 1.0) / 6.0
    mean = sx / m
    var = np.maximum(sxx / m - mean * mean, 0.0)
    den = m * suu - su * su
    slope = np.where(den > 0, (m * sux - su * sx) / np.where(den > 0, den, 1.0), 0.0)
    out = {"mean": mean, "std": np.sqrt(var), "slope": slope}
    # Padding with +-inf makes the short windows at the start of a run come out right.
    if "min" in wanted:
        pad = np.vstack([np.full((w - 1, x.shape[1]), np.inf), x])
        out["min"] = sliding_window_view(pad, w, axis=0).min(axis=2)
    if "max" in wanted:
        pad = np.vstack([np.full((w - 1, x.shape[1]), -np.inf), x])
        out["max"] = sliding_window_view(pad, w, axis=0).max(axis=2)
    return out
