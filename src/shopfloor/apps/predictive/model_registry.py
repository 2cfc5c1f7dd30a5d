"""File-based registry of RUL models: per tenant, per model name, numbered versions.

Layout under the root directory the caller gives::

    <root>/<tenant_id>/<model_name>/<version>/    point_0.txt ... lower.txt upper.txt spec.json
                                                  metadata.json
    <root>/<tenant_id>/<model_name>/active.json   {"version": 3}

Versions are 1, 2, 3, ... in the order they were registered. A version is written into a
temporary folder and renamed into place, so a reader never sees half a model; ``active.json``
is replaced atomically too. Tenant ids and model names are checked against a strict pattern
(letters, digits, ``_ . -``, not starting with a dot) so no name can reach outside the root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopfloor.apps.predictive.model import EvaluationReport, RulModel
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.timeutil import now_ns, to_iso

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_name(value: str | int, field: str) -> str:
    """``value`` as a folder name, or BadInput: no separators, no ``..``, not empty."""
    s = str(value)
    if not _NAME.fullmatch(s) or ".." in s:
        raise BadInput(
            f"{field} {s!r} must be 1-128 letters, digits, '_', '.', '-' and not start with '.'",
            field,
        )
    return s


@dataclass(frozen=True)
class ModelVersion:
    tenant_id: str
    name: str
    version: int
    path: Path
    metadata: dict[str, Any]
    active: bool


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _model_dir(self, tenant_id: str | int, name: str) -> Path:
        return self.root / check_name(tenant_id, "tenant_id") / check_name(name, "model_name")

    def register(
        self,
        tenant_id: str | int,
        name: str,
        model: RulModel,
        *,
        training_data: dict[str, Any] | None = None,
        evaluation: EvaluationReport | dict[str, Any] | None = None,
        activate: bool = False,
    ) -> ModelVersion:
        """Store ``model`` as the next version; returns it. ``activate`` marks it active."""
        base = self._model_dir(tenant_id, name)
        base.mkdir(parents=True, exist_ok=True)
        report = model.report.to_dict() if model.report is not None else None
        ev = evaluation.to_dict() if isinstance(evaluation, EvaluationReport) else evaluation
        files = model.to_files()
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=base))
        try:
            for fname, text in files.items():
                (tmp / fname).write_text(text)
            while True:
                version = max(self._versions(base), default=0) + 1
                meta = {
                    "tenant_id": str(tenant_id),
                    "model_name": name,
                    "version": version,
                    "created_at": to_iso(now_ns()),
                    "kind": "rul",
                    "training_data": training_data or {},
                    "hyper_parameters": None if report is None else report["chosen"],
                    "cv": None if report is None else _cv_summary(report),
                    "evaluation": ev,
                }
                (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
                try:
                    # rename fails if another writer took this number first: try the next one
                    tmp.rename(base / str(version))
                    break
                except OSError:
                    if not (base / str(version)).exists():
                        raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        if activate:
            self.activate(tenant_id, name, version)
        return self._version(tenant_id, name, version)

    def list_models(self, tenant_id: str | int) -> list[str]:
        d = self.root / check_name(tenant_id, "tenant_id")
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and self._versions(p))

    def list_versions(self, tenant_id: str | int, name: str) -> list[ModelVersion]:
        base = self._model_dir(tenant_id, name)
        return [self._version(tenant_id, name, v) for v in sorted(self._versions(base))]

    def latest_version(self, tenant_id: str | int, name: str) -> int:
        versions = self._versions(self._model_dir(tenant_id, name))
        if not versions:
            raise NotFound(f"no model {name!r} for tenant {tenant_id!r}")
        return max(versions)

    def active_version(self, tenant_id: str | int, name: str) -> int | None:
        f = self._model_dir(tenant_id, name) / "active.json"
        if not f.is_file():
            return None
        return int(json.loads(f.read_text())["version"])

    def activate(self, tenant_id: str | int, name: str, version: int) -> None:
        base = self._model_dir(tenant_id, name)
        if version not in self._versions(base):
            raise NotFound(f"model {name!r} of tenant {tenant_id!r} has no version {version}")
        tmp = base / f".active-{os.getpid()}.json"
        tmp.write_text(json.dumps({"version": version}))
        os.replace(tmp, base / "active.json")

    def load(
        self, tenant_id: str | int, name: str, version: int | None = None
    ) -> tuple[RulModel, ModelVersion]:
        """A given version, or the latest one when ``version`` is None."""
        v = self.latest_version(tenant_id, name) if version is None else version
        info = self._version(tenant_id, name, v)
        return RulModel.load(info.path), info

    def load_active(self, tenant_id: str | int, name: str) -> tuple[RulModel, ModelVersion]:
        v = self.active_version(tenant_id, name)
        if v is None:
            raise NotFound(f"model {name!r} of tenant {tenant_id!r} has no active version")
        return self.load(tenant_id, name, v)

    def _version(self, tenant_id: str | int, name: str, version: int) -> ModelVersion:
        base = self._model_dir(tenant_id, name)
        path = base / str(int(version))
        meta_file = path / "metadata.json"
        if not meta_file.is_file():
            raise NotFound(f"model {name!r} of tenant {tenant_id!r} has no version {version}")
        return ModelVersion(
            tenant_id=str(tenant_id),
            name=name,
            version=int(version),
            path=path,
            metadata=json.loads(meta_file.read_text()),
            active=self.active_version(tenant_id, name) == version,
        )

    @staticmethod
    def _versions(base: Path) -> list[int]:
        if not base.is_dir():
            return []
        return [int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir()]


def _cv_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "cv_rmse": report["cv_rmse"],
        "best_iteration": report["best_iteration"],
        "candidates": [
            {"params": c["params"], "cv_rmse": c["cv_rmse"], "best_iteration": c["best_iteration"]}
            for c in report["candidates"]
        ],
        "n_units": report["n_units"],
        "n_rows": report["n_rows"],
        "signals_dropped": report["signals_dropped"],
        "n_regimes": report["n_regimes"],
    }
