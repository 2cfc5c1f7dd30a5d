"""The third-party example app in examples/energy-per-part passes check_app, as it would
installed: its own test runs here with its source folder on the path."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "energy-per-part"
sys.path.insert(0, str(EXAMPLE / "src"))

from shopfloor_energy_per_part.app import EnergyPerPart  # noqa: E402

sys.path.insert(0, str(EXAMPLE / "tests"))
from test_app import test_energy_per_part_conforms_and_writes_its_signal  # noqa: E402, F401


def test_the_example_declares_its_entry_point_under_its_manifest_name() -> None:
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points."shopfloor.apps"]' in text
    assert f'{EnergyPerPart.manifest.name} = "shopfloor_energy_per_part.app:EnergyPerPart"' in text
