"""The package's public surface and the example in docs/apps/oee.md stay true."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import shopfloor.apps.oee as oee

DOC = Path(__file__).resolve().parents[3] / "docs" / "apps" / "oee.md"


def test_everything_in_all_is_importable() -> None:
    for name in oee.__all__:
        assert hasattr(oee, name), name
    assert {"machine_oee", "current_shift_oee", "compute_kpis", "parse_calendar", "roll_up"} <= set(
        oee.__all__
    )


def test_the_docs_example_prints_what_its_comments_say() -> None:
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})
    # Running 7 of 8 h, ideal time 700 x 36 s = 7 h, all good: OEE 7/8.
    oee_line, reasons_line = out.getvalue().splitlines()
    assert float(oee_line) == 0.875
    assert reasons_line == "{('down', 'jam'): 3600000000000}"


def test_the_docs_name_every_state_and_kpi() -> None:
    text = DOC.read_text()
    for state in oee.CATEGORIES:
        assert f"`{state}`" in text, state
    for kpi in ("availability", "effectiveness", "OEE", "NEE", "first-pass yield", "MTBF", "MTTR"):
        assert kpi in text, kpi
