"""Predictive maintenance: remaining-useful-life (RUL) models from run-to-failure histories.

- :mod:`.features`: the run data model (:class:`Run`), per-regime normalisation and
  trailing-window features;
- :mod:`.model`: training with cross-validation by unit, prediction with an interval,
  save/load as LightGBM model text plus JSON, the RMSE and NASA (PHM08) scores;
- :mod:`.model_registry`: models per tenant, versions, metadata and the active version;
- :mod:`.cmapss`: importer of NASA's C-MAPSS turbofan text files.

See docs/apps/predictive-maintenance.md.
"""

from shopfloor.apps.predictive.cmapss import parse_cmapss, parse_rul, read_cmapss, read_rul
from shopfloor.apps.predictive.features import (
    FeatureSpec,
    Normaliser,
    Run,
    capped_rul,
    window_features,
)
from shopfloor.apps.predictive.model import (
    EvaluationReport,
    HyperParams,
    RulModel,
    RulPrediction,
    TrainConfig,
    TrainingReport,
    evaluate,
    nasa_score,
    rmse,
    train,
    unit_folds,
)
from shopfloor.apps.predictive.model_registry import ModelRegistry, ModelVersion, check_name

__all__ = [
    "EvaluationReport",
    "FeatureSpec",
    "HyperParams",
    "ModelRegistry",
    "ModelVersion",
    "Normaliser",
    "RulModel",
    "RulPrediction",
    "Run",
    "TrainConfig",
    "TrainingReport",
    "capped_rul",
    "check_name",
    "evaluate",
    "nasa_score",
    "parse_cmapss",
    "parse_rul",
    "read_cmapss",
    "read_rul",
    "rmse",
    "train",
    "unit_folds",
    "window_features",
]
