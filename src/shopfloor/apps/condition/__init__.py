"""Condition monitoring: streaming anomaly detection per signal and per machine.

- :class:`StreamingDetector` (``detector``): one signal, one point at a time, a score in
  [0, 1], trained on a baseline, state as a dict.
- :class:`MultivariateDetector` (``multivariate``): several aligned signals of one machine,
  a score per time step and each signal's share of it.
- ``nab_scoring`` and ``nab_corpus``: the Numenta Anomaly Benchmark's scoring rules and a
  reader for its corpus, used by ``shopfloor bench anomaly``.

See docs/apps/condition-monitoring.md.
"""

from shopfloor.apps.condition.detector import DetectorConfig, ScoreDetail, StreamingDetector
from shopfloor.apps.condition.multivariate import MultivariateDetector, MultivariateScore
from shopfloor.apps.condition.nab_scoring import (
    PROFILES,
    Profile,
    ProfileResult,
    ScoredFile,
    score_corpus,
)

__all__ = [
    "PROFILES",
    "DetectorConfig",
    "MultivariateDetector",
    "MultivariateScore",
    "Profile",
    "ProfileResult",
    "ScoreDetail",
    "ScoredFile",
    "StreamingDetector",
    "score_corpus",
]
