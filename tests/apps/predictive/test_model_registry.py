"""The model registry: layout on disk, versions, the active version, and names that are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shopfloor.apps.predictive.model import HyperParams, RulModel, evaluate, train
from shopfloor.apps.predictive.model_registry import ModelRegistry, check_name
from shopfloor.core.errors import BadInput, NotFound
from tests.apps.predictive.test_model import small_config, synthetic_runs


@pytest.fixture(scope="module")
def model() -> RulModel:
    cfg = small_config(candidates=(HyperParams(n_estimators=25),), n_seeds=1)
    return train(synthetic_runs(6, seed=4), cfg)


def test_versions_layout_and_metadata(model: RulModel, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    test_runs = synthetic_runs(3, seed=5)
    ev = evaluate(model, test_runs, np.zeros(3))
    v1 = reg.register("acme", "press-rul", model, training_data={"source": "synthetic"})
    v2 = reg.register(7, "press-rul", model, evaluation=ev)  # an integer tenant id works too
    assert (v1.version, v2.version) == (1, 1)  # different tenants, separate numbering
    v2 = reg.register("acme", "press-rul", model, evaluation=ev)
    assert v2.version == 2
    assert v2.path == tmp_path / "acme" / "press-rul" / "2"
    assert (v2.path / "spec.json").is_file()
    assert (v2.path / "point_0.txt").is_file()
    meta = json.loads((v2.path / "metadata.json").read_text())
    assert meta["version"] == 2
    assert meta["created_at"].endswith("Z")
    assert meta["evaluation"]["n_units"] == 3
    assert meta["evaluation"]["rmse"] == ev.rmse
    assert meta["hyper_parameters"]["n_estimators"] == model.best_iteration
    assert meta["cv"]["signals_dropped"] == ["flat"]
    assert v1.metadata["training_data"] == {"source": "synthetic"}
    assert [v.version for v in reg.list_versions("acme", "press-rul")] == [1, 2]
    assert reg.list_models("acme") == ["press-rul"]
    assert reg.list_models("nobody") == []
    assert not any(p.name.startswith(".") for p in (tmp_path / "acme" / "press-rul").iterdir())


def test_latest_active_and_given_versions(model: RulModel, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for _ in range(3):
        reg.register("acme", "m", model)
    assert reg.latest_version("acme", "m") == 3
    assert reg.active_version("acme", "m") is None
    with pytest.raises(NotFound, match="no active version"):
        reg.load_active("acme", "m")
    reg.activate("acme", "m", 2)
    loaded, info = reg.load_active("acme", "m")
    assert info.version == 2
    assert info.active
    r = synthetic_runs(1, seed=8)[0]
    assert np.array_equal(loaded.predict(r).rul, model.predict(r).rul)
    assert reg.load("acme", "m")[1].version == 3  # latest
    assert reg.load("acme", "m", 1)[1].version == 1
    assert [v.active for v in reg.list_versions("acme", "m")] == [False, True, False]
    v4 = reg.register("acme", "m", model, activate=True)
    assert reg.active_version("acme", "m") == v4.version == 4
    with pytest.raises(NotFound, match="no version 9"):
        reg.activate("acme", "m", 9)
    with pytest.raises(NotFound, match="no version 9"):
        reg.load("acme", "m", 9)
    with pytest.raises(NotFound, match="no model"):
        reg.load("acme", "other")


@pytest.mark.parametrize("bad", ["../x", "/", "", "a/b", "..", ".hidden", "a..b", "x" * 129, "a b"])
def test_names_that_could_leave_the_root_are_refused(
    bad: str, model: RulModel, tmp_path: Path
) -> None:
    reg = ModelRegistry(tmp_path / "root")
    with pytest.raises(BadInput, match="tenant_id"):
        reg.register(bad, "m", model)
    with pytest.raises(BadInput, match="model_name"):
        reg.register("acme", bad, model)
    with pytest.raises(BadInput):
        reg.list_models(bad)
    assert not (tmp_path / "x").exists()


def test_good_names_pass() -> None:
    assert check_name("press-01_v2.rul", "model_name") == "press-01_v2.rul"
    assert check_name(42, "tenant_id") == "42"
