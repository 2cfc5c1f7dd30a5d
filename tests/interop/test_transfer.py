"""Bulk import and export of CSV and Parquet files against a real platform in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.types import DataType
from shopfloor.interop.transfer import (
    ImportFailed,
    export_file,
    import_file,
    rfc3339,
)
from shopfloor.registry.service import TenantInfo

T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
T0_NS = T0_MS * 1_000_000
FAR = 4_000_000_000_000_000_000  # 2096, beyond anything stored


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(Settings(data_dir=tmp_path / "data"))
    yield p
    p.close()


@pytest.fixture
def tenant(platform: Platform) -> TenantInfo:
    return platform.registry.create_tenant("t")[0]


def points(platform: Platform, tenant: TenantInfo, keys: list[str] | None = None) -> pa.Table:
    """All points of the tenant as (signal key, ts, value, text, quality), sorted."""
    infos = platform.registry.list_signals(tenant.id)
    names = {s.id: s.key for s in infos if keys is None or s.key in keys}
    raw = platform.historian.query_raw(tenant.id, list(names), 0, FAR)
    key = [names[i] for i in raw.column("signal_id").to_pylist()]
    t = raw.drop_columns(["signal_id"]).add_column(0, "signal", pa.array(key, pa.string()))
    return t.sort_by([("signal", "ascending"), ("ts", "ascending")])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- long CSV ---------------------------------------------------------------------------------


def test_csv_long_import_epoch_ms(platform: Platform, tenant: TenantInfo, tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.csv",
        "signal,ts,value,quality\n"
        f"press-01/temp,{T0_MS},20.5,good\n"
        f"press-01/temp,{T0_MS + 1000},21,uncertain\n"
        f"press-01/state,{T0_MS},running,good\n"
        f"press-02/count,{T0_MS},7,bad\n",
    )
    report = import_file(platform, tenant, f)
    assert (report.rows, report.points, report.signals, report.errors) == (4, 4, 3, [])
    got = points(platform, tenant)
    assert got.column("signal").to_pylist() == [
        "press-01/state",
        "press-01/temp",
        "press-01/temp",
        "press-02/count",
    ]
    assert got.column("ts").to_pylist() == [T0_NS, T0_NS, T0_NS + 10**9, T0_NS]
    assert got.column("value").to_pylist() == [None, 20.5, 21.0, 7.0]
    assert got.column("text").to_pylist() == ["running", None, None, None]
    assert got.column("quality").to_pylist() == [0, 0, 0x40000000, 0x80000000]
    state = platform.registry.get_signal(tenant.id, "press-01/state")
    assert state.data_type == DataType.STRING


def test_csv_rfc3339_with_offsets_and_bare_names(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "b.csv",
        "signal;ts;value\n"  # semicolon-separated, as many European SCADA exports are
        "temp;2023-11-14T22:13:20Z;1.5\n"
        "temp;2023-11-14T23:13:21+01:00;2.5\n"
        "temp;2023-11-14T22:13:22.125Z;3.5\n",
    )
    report = import_file(platform, tenant, f, device="oven")
    assert report.points == 3
    got = points(platform, tenant)
    assert got.column("signal").to_pylist() == ["oven/temp"] * 3
    assert got.column("ts").to_pylist() == [T0_NS, T0_NS + 10**9, T0_NS + 2_125_000_000]


def test_epoch_seconds_with_ts_unit(platform: Platform, tenant: TenantInfo, tmp_path: Path) -> None:
    f = write(
        tmp_path / "c.csv", f"signal,ts,value\nm/x,{T0_MS // 1000},1\nm/x,{T0_MS // 1000 + 1},2\n"
    )
    import_file(platform, tenant, f, ts_unit="s")
    assert points(platform, tenant).column("ts").to_pylist() == [T0_NS, T0_NS + 10**9]


def test_naive_timestamps_are_rejected(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "naive.csv",
        "signal,ts,value\nm/x,2023-11-14T22:13:20Z,1\nm/x,2023-11-14T22:13:21,2\n",
    )
    with pytest.raises(ImportFailed, match="no UTC offset") as info:
        import_file(platform, tenant, f)
    assert "in row 2" in str(info.value)
    assert info.value.report.points == 0
    assert points(platform, tenant).num_rows == 0


def test_naive_parquet_timestamps_are_rejected(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = tmp_path / "naive.parquet"
    pq.write_table(
        pa.table(
            {
                "signal": ["m/x"],
                "ts": pa.array([T0_NS], pa.timestamp("ns")),
                "value": [1.0],
            }
        ),
        f,
    )
    with pytest.raises(ImportFailed, match="naive timestamps"):
        import_file(platform, tenant, f)


def test_unknown_signals_rejected_without_auto_registration(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    platform.registry.update_tenant(tenant.id, auto_register_signals=False)
    f = write(tmp_path / "u.csv", f"signal,ts,value\nm/ghost,{T0_MS},1\n")
    with pytest.raises(ImportFailed, match="auto-registration is off") as info:
        import_file(platform, tenant, f)
    assert "ghost" in str(info.value)
    assert platform.registry.list_signals(tenant.id) == []


# -- Parquet ----------------------------------------------------------------------------------


def test_parquet_long_import(platform: Platform, tenant: TenantInfo, tmp_path: Path) -> None:
    f = tmp_path / "p.parquet"
    n = 2_500
    pq.write_table(
        pa.table(
            {
                "signal": pa.array(
                    ["a/x", "a/y"] * (n // 2) + ["a/x"] * (n % 2)
                ).dictionary_encode(),
                "ts": pa.array(T0_NS + np.arange(n, dtype=np.int64) * 10**6).cast(
                    pa.timestamp("ns", "UTC")
                ),
                "value": pa.array(np.arange(n, dtype=np.float64)),
            }
        ),
        f,
        row_group_size=1_000,
    )
    report = import_file(platform, tenant, f, chunk_rows=700)
    assert (report.rows, report.points, report.signals) == (n, n, 2)
    got = points(platform, tenant)
    assert got.num_rows == n
    assert sorted(got.column("value").to_pylist()) == list(map(float, range(n)))


def test_parquet_skip_rows_skips_row_groups(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = tmp_path / "s.parquet"
    n = 1_000
    pq.write_table(
        pa.table(
            {
                "signal": ["a/x"] * n,
                "ts": pa.array(T0_MS + np.arange(n, dtype=np.int64)),
                "value": pa.array(np.arange(n, dtype=np.float64)),
            }
        ),
        f,
        row_group_size=300,
    )
    report = import_file(platform, tenant, f, skip_rows=650)
    assert (report.rows, report.skipped_rows) == (350, 650)
    assert points(platform, tenant).column("value").to_pylist()[0] == 650.0


# -- wide -------------------------------------------------------------------------------------


def test_wide_csv_with_gaps(platform: Platform, tenant: TenantInfo, tmp_path: Path) -> None:
    f = write(
        tmp_path / "w.csv",
        "timestamp,temp,pressure,mode\n"
        "2023-11-14T22:13:20Z,20.5,,auto\n"
        "2023-11-14T22:13:21Z,,1.25,\n"
        "2023-11-14T22:13:22Z,21,0,manual\n",
    )
    report = import_file(platform, tenant, f, wide=True, device="line1")
    assert (report.rows, report.points, report.signals) == (3, 6, 3)
    got = points(platform, tenant)
    rows = list(
        zip(
            got.column("signal").to_pylist(),
            [(t - T0_NS) // 10**9 for t in got.column("ts").to_pylist()],
            got.column("value").to_pylist(),
            got.column("text").to_pylist(),
            strict=True,
        )
    )
    assert rows == [
        ("line1/mode", 0, None, "auto"),
        ("line1/mode", 2, None, "manual"),
        ("line1/pressure", 1, 1.25, None),
        ("line1/pressure", 2, 0.0, None),  # a zero is a point; an empty cell is not
        ("line1/temp", 0, 20.5, None),
        ("line1/temp", 2, 21.0, None),
    ]


def test_wide_needs_device_for_bare_columns(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = write(tmp_path / "w.csv", f"ts,m/a,b\n{T0_MS},1,2\n")
    with pytest.raises(BadInput, match="name no device"):
        import_file(platform, tenant, f, wide=True)


def test_wide_bad_cell_names_row_and_column(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = write(tmp_path / "w.csv", f"ts,m/a,m/b\n{T0_MS},1,2\n{T0_MS + 1},nan,3\n")
    with pytest.raises(ImportFailed, match=r"column 'm/a'.*in row 2 is not a finite number"):
        import_file(platform, tenant, f, wide=True)


# -- errors and resume ------------------------------------------------------------------------


def test_bad_row_in_second_chunk_keeps_first_chunk(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    lines = ["signal,ts,value"]
    lines += [f"m/x,{T0_MS + i},{i}" for i in range(250)]
    lines[1 + 137] = "m/x,not-a-time,137"  # data row 138: in the second chunk of 100
    f = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(ImportFailed) as info:
        import_file(platform, tenant, f, chunk_rows=100)
    err = info.value
    msg = str(err)
    assert "rows 101-200 rejected" in msg
    assert "in row 138" in msg
    assert "Rows 1-100 are stored" in msg
    assert "--skip-rows 100" in msg
    assert str(f) in msg
    assert (err.first_row, err.last_row) == (101, 200)
    assert (err.report.rows, err.report.points, err.report.resume_at) == (100, 100, 100)
    assert err.report.errors == [msg]
    assert points(platform, tenant).num_rows == 100  # durably stored before the failure

    # Fix the file and resume where it stopped.
    lines[1 + 137] = f"m/x,{T0_MS + 137},137"
    write(f, "\n".join(lines) + "\n")
    report = import_file(platform, tenant, f, chunk_rows=100, skip_rows=err.report.resume_at)
    assert (report.rows, report.skipped_rows) == (150, 100)
    got = points(platform, tenant)
    assert got.column("value").to_pylist() == list(map(float, range(250)))


def test_missing_file_suffix_and_columns(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    with pytest.raises(BadInput, match="no such file"):
        import_file(platform, tenant, tmp_path / "nope.csv")
    with pytest.raises(BadInput, match="from its suffix"):
        import_file(platform, tenant, write(tmp_path / "x.xlsx", "a"))
    f = write(tmp_path / "cols.csv", f"signal,ts\nm/x,{T0_MS}\n")
    with pytest.raises(BadInput, match=r"missing column.*value"):
        import_file(platform, tenant, f)
    f = write(tmp_path / "extra.csv", f"signal,ts,value,unit\nm/x,{T0_MS},1,C\n")
    with pytest.raises(BadInput, match=r"unknown column.*unit"):
        import_file(platform, tenant, f)
    f = write(tmp_path / "nots.csv", "signal,value\nm/x,1\n")
    with pytest.raises(BadInput, match="no time column"):
        import_file(platform, tenant, f)


def test_mixed_epoch_and_text_timestamps(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    f = write(tmp_path / "m.csv", f"signal,ts,value\nm/x,{T0_MS},1\nm/x,2023-11-14T22:13:20Z,2\n")
    with pytest.raises(ImportFailed, match="mix epoch numbers"):
        import_file(platform, tenant, f)


def test_header_only_file_imports_nothing(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    report = import_file(platform, tenant, write(tmp_path / "h.csv", "signal,ts,value\n"))
    assert (report.rows, report.points) == (0, 0)


# -- export and round trip --------------------------------------------------------------------


def _seed(platform: Platform, tenant: TenantInfo, tmp_path: Path) -> None:
    """Numbers (ns timestamps, awkward floats, quality codes), text, and a sparse signal."""
    n = 3_000
    ts = T0_NS + np.arange(n, dtype=np.int64) * 1_000_003  # not whole milliseconds
    vals = np.sin(np.arange(n)) * 1e3 + 1 / 3
    quality = np.where(np.arange(n) % 7 == 0, 0x80350000, 0).astype(np.uint32)
    f = tmp_path / "seed.parquet"
    pq.write_table(
        pa.table(
            {
                "signal": pa.array(["m1/speed"] * n + ["m1/state"] * 3 + ["m2/sparse"]),
                "ts": pa.array(
                    np.concatenate([ts, ts[:3], [T0_NS + 5 * 86_400 * 10**9]]), pa.int64()
                ),
                "value": pa.array([*vals.tolist(), None, None, None, 42.0], pa.float64()),
                "text": pa.array([None] * n + ["run", "", 'stop, then "idle"'] + [None]),
                "quality": pa.array(np.concatenate([quality, [0, 0, 0, 0x40000000]]), pa.uint32()),
            }
        ),
        f,
    )
    import_file(platform, tenant, f, ts_unit="ns")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".csv.gz"])
def test_round_trip_into_another_tenant(
    platform: Platform, tenant: TenantInfo, tmp_path: Path, suffix: str
) -> None:
    _seed(platform, tenant, tmp_path)
    out = tmp_path / f"export{suffix}"
    report = export_file(platform, tenant, out, start=0, end=FAR, slice_rows=1_000)
    assert report.rows == 3_004
    assert report.signals == 3
    assert report.bytes == out.stat().st_size > 0
    assert not out.with_name(out.name + ".part").exists()

    other = platform.registry.create_tenant("other")[0]
    back = import_file(platform, other, out, chunk_rows=777)
    assert (back.rows, back.points, back.signals) == (3_004, 3_004, 3)
    assert points(platform, other).equals(points(platform, tenant))


def test_export_selected_signals_window_and_order(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    _seed(platform, tenant, tmp_path)
    out = tmp_path / "part.csv"
    start, end = T0_NS + 100 * 1_000_003, T0_NS + 200 * 1_000_003
    report = export_file(
        platform, tenant, out, signals=["m1/state", "m1/speed"], start=start, end=end
    )
    table = pacsv.read_csv(out)
    assert report.rows == table.num_rows == 100
    assert set(table.column("signal").to_pylist()) == {"m1/speed"}
    assert table.column("ts").cast(pa.int64())[0].as_py() == start
    assert out.read_text().splitlines()[1] == (
        '"m1/speed","2023-11-14T22:13:20.100000300Z",'
        + repr(float(np.sin(100) * 1e3 + 1 / 3))
        + ",,0"
    )
    with pytest.raises(NotFound):
        export_file(platform, tenant, tmp_path / "x.csv", signals=["m9/none"], start=0, end=FAR)
    with pytest.raises(BadInput, match="end must be after start"):
        export_file(platform, tenant, tmp_path / "x.csv", start=10, end=10)


def test_export_slices_busy_signals_and_keeps_memory_bounded(
    platform: Platform, tenant: TenantInfo, tmp_path: Path
) -> None:
    _seed(platform, tenant, tmp_path)
    seen: list[int] = []
    real = platform.historian.query_raw

    def spy(*args: object, **kwargs: object) -> pa.Table:
        table = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(table.num_rows)
        return table

    platform.historian.query_raw = spy  # type: ignore[method-assign]
    out = tmp_path / "sliced.parquet"
    report = export_file(platform, tenant, out, start=0, end=FAR, slice_rows=400)
    assert report.rows == 3_004
    assert max(seen) <= 400
    table = pq.read_table(out)
    assert table.schema.field("ts").type == pa.timestamp("ns", "UTC")
    speed = table.filter(pa.compute.equal(table.column("signal"), "m1/speed"))
    ts = speed.column("ts").cast(pa.int64()).to_numpy()
    assert len(ts) == 3_000
    assert np.all(np.diff(ts) > 0)


def test_rfc3339_uses_the_coarsest_exact_unit() -> None:
    ns = pa.array([T0_NS, T0_NS + 1_000_000], pa.int64()).cast(pa.timestamp("ns", "UTC"))
    assert rfc3339(ns).to_pylist() == ["2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.001Z"]
    ns = pa.array([T0_NS, T0_NS + 7], pa.int64()).cast(pa.timestamp("ns", "UTC"))
    assert rfc3339(ns).to_pylist()[1] == "2023-11-14T22:13:20.000000007Z"
    s = pa.array([T0_NS], pa.int64()).cast(pa.timestamp("ns", "UTC"))
    assert rfc3339(s).to_pylist() == ["2023-11-14T22:13:20Z"]
