"""The C-MAPSS importer: 26 numbers a line, units in blocks, RUL files, and bad lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfloor.apps.predictive.cmapss import (
    SENSOR_NAMES,
    SETTING_NAMES,
    parse_cmapss,
    parse_rul,
    read_cmapss,
    read_rul,
)
from shopfloor.core.errors import BadInput

# Three lines of unit 1 and two of unit 2 of train_FD001.txt, with a blank line between; the
# real files end their lines with two spaces, added below.
_SAMPLE = """\
1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190
1 2 0.0019 -0.0003 100.0 518.67 642.15 1591.82 1403.14 14.62 21.61 553.75 2388.04 9044.07 1.30 47.49 522.28 2388.07 8131.49 8.4318 0.03 392 2388 100.00 39.00 23.4236
1 3 -0.0043 0.0003 100.0 518.67 642.35 1587.99 1404.20 14.62 21.61 554.26 2388.08 9052.94 1.30 47.27 522.42 2388.03 8133.23 8.4178 0.03 390 2388 100.00 38.95 23.3442
2 1 -0.0018 0.0006 100.0 518.67 641.89 1583.84 1391.28 14.62 21.61 554.53 2388.04 9048.66 1.30 47.31 522.15 2388.03 8140.66 8.3871 0.03 391 2388 100.00 38.94 23.4585

2 2 0.0043 -0.0003 100.0 518.67 641.82 1587.05 1401.39 14.62 21.61 554.42 2388.01 9051.70 1.30 47.29 522.41 2388.06 8146.11 8.4285 0.03 392 2388 100.00 39.11 23.3823
"""
SAMPLE = _SAMPLE.replace("\n", "  \n")


def test_sample_becomes_one_run_per_unit() -> None:
    runs = parse_cmapss(SAMPLE)
    assert [r.unit for r in runs] == ["1", "2"]
    one, two = runs
    assert one.time.tolist() == [1.0, 2.0, 3.0]
    assert two.time.tolist() == [1.0, 2.0]
    assert one.signal_names == SENSOR_NAMES
    assert len(SENSOR_NAMES) == 21
    assert one.setting_names == SETTING_NAMES
    assert one.signals.shape == (3, 21)
    assert one.settings is not None
    assert one.settings.shape == (3, 3)
    # unit 1, cycle 2: op_setting_1 = 0.0019, sensor_2 = 642.15, sensor_21 = 23.4236
    assert one.settings[1, 0] == pytest.approx(0.0019)
    assert one.signals[1, 1] == pytest.approx(642.15)
    assert one.signals[1, 20] == pytest.approx(23.4236)
    assert one.failed
    assert one.rul().tolist() == [2.0, 1.0, 0.0]


def test_test_files_are_not_run_to_failure(tmp_path: Path) -> None:
    (tmp_path / "test_FD009.txt").write_text(SAMPLE)
    (tmp_path / "train_FD009.txt").write_text(SAMPLE)
    assert not read_cmapss(tmp_path / "test_FD009.txt")[0].failed
    assert read_cmapss(tmp_path / "train_FD009.txt")[0].failed
    with pytest.raises(BadInput, match="did not end in failure"):
        read_cmapss(tmp_path / "test_FD009.txt")[0].rul()


def _lines() -> list[str]:
    return SAMPLE.splitlines()


def test_short_line_names_its_line_number() -> None:
    lines = _lines()
    lines[2] = " ".join(lines[2].split()[:25])
    with pytest.raises(BadInput, match=r"line 3: expected 26 numbers, got 25") as e:
        parse_cmapss("\n".join(lines), source="train_FD001.txt")
    assert e.value.field == "train_FD001.txt"


def test_non_number_names_its_line_number() -> None:
    lines = _lines()
    lines[1] = lines[1].replace("642.15", "abc")
    with pytest.raises(BadInput, match=r"line 2: not a number"):
        parse_cmapss("\n".join(lines))


def test_cycles_must_increase_within_a_unit() -> None:
    lines = _lines()
    lines[1], lines[2] = lines[2], lines[1]  # cycle 3 before cycle 2
    with pytest.raises(BadInput, match=r"line 3: cycles of unit 1 must increase"):
        parse_cmapss("\n".join(lines))


def test_a_unit_split_in_two_blocks_is_refused() -> None:
    lines = _lines()
    text = "\n".join([*lines[:2], lines[3], lines[2]])  # 1, 1, 2, 1
    with pytest.raises(BadInput, match="unit 1 appears twice"):
        parse_cmapss(text)


def test_empty_text_is_refused() -> None:
    with pytest.raises(BadInput, match="no data lines"):
        parse_cmapss("\n  \n")


def test_rul_file(tmp_path: Path) -> None:
    f = tmp_path / "RUL_FD001.txt"
    f.write_text("112 \n98 \n\n69 \n")
    assert read_rul(f).tolist() == [112.0, 98.0, 69.0]
    with pytest.raises(BadInput, match="line 2: expected one number"):
        parse_rul("1\n2 3\n")
    with pytest.raises(BadInput, match="line 1: RUL must be a number >= 0"):
        parse_rul("-4\n")
    assert np.array_equal(parse_rul("7"), np.array([7.0]))
