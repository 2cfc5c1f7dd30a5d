"""The example app passes Shopfloor's conformance suite and computes what it says."""

from __future__ import annotations

from pathlib import Path

from shopfloor_energy_per_part.app import EnergyPerPart

from shopfloor.testing import check_app


def test_energy_per_part_conforms_and_writes_its_signal(tmp_path: Path) -> None:
    report = check_app(EnergyPerPart, tmp_path, minutes=20)
    assert report.ok, str(report)
    written = {k: n for k, n in report.signals_written.items() if k.endswith("/energy_per_part")}
    assert written, report.signals_written  # one derived signal per running press
    machines = report.routes["current"]["machines"]
    values = [m["energy_per_part_kwh"] for m in machines if m["energy_per_part_kwh"] is not None]
    # A press uses tens of kW for parts of a few seconds: a few hundredths of a kWh per part.
    assert values
    assert all(0.001 < v < 1.0 for v in values), values
