"""Reading a NAB-shaped folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopfloor.apps.condition.nab_corpus import load_corpus, read_series_csv, window_count
from shopfloor.core.errors import BadInput

# 2014-01-01 00:00:00 UTC = 1,388,534,400 s since the epoch (16,071 days * 86,400 s).
T0 = 1_388_534_400 * 1_000_000_000
MIN = 60 * 1_000_000_000


def nab_folder(tmp_path: Path) -> Path:
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    rows = "\n".join(f"2014-01-01 00:0{i}:00,{i * 1.5}" for i in range(6))
    (tmp_path / "data" / "cat" / "a.csv").write_text("timestamp,value\n" + rows + "\n")
    (tmp_path / "data" / "cat" / "b.csv").write_text("timestamp,value\n" + rows + "\n")
    windows = {
        "cat/a.csv": [["2014-01-01 00:02:00.000000", "2014-01-01 00:04:00.000000"]],
        "cat/b.csv": [],
    }
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return tmp_path


def test_load_corpus(tmp_path: Path) -> None:
    corpus = load_corpus(nab_folder(tmp_path))
    assert [s.name for s in corpus] == ["cat/a.csv", "cat/b.csv"]
    a = corpus[0]
    assert a.timestamps.tolist() == [T0 + i * MIN for i in range(6)]
    assert a.values.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]
    assert a.windows == [(T0 + 2 * MIN, T0 + 4 * MIN)]
    assert corpus[1].windows == []
    assert window_count(tmp_path) == 1
    assert [s.name for s in load_corpus(tmp_path, only=["cat/b.csv"])] == ["cat/b.csv"]


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        load_corpus(tmp_path)
    nab_folder(tmp_path)
    with pytest.raises(BadInput, match="not in"):
        load_corpus(tmp_path, only=["cat/zzz.csv"])
    bad = tmp_path / "bad.csv"
    bad.write_text("time,reading\n1,2\n")
    with pytest.raises(BadInput, match="needs columns timestamp and value"):
        read_series_csv(bad)
    bad.write_text("timestamp,value\nyesterday,2\n")
    with pytest.raises(BadInput, match="unreadable timestamp"):
        read_series_csv(bad)
