"""The simulated factory: layout, counters, states, faults, failed polls, determinism."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

import shopfloor.edge.connectors.simulator as simulator
from shopfloor.core.quality import BAD
from shopfloor.edge.connectors.simulator import BEARING_FAILURE, FactorySimulator, Frame

START = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
RUNNING, DOWN = 2, 4


@dataclass
class History:
    sim: FactorySimulator
    ts: npt.NDArray[np.int64]  # (steps,)
    values: npt.NDArray[np.float64]  # (steps, signals)
    quality: npt.NDArray[np.uint32]
    offsets: dict[str, tuple[int, tuple[str, ...]]]  # device -> (first column, names)

    def col(self, device: str, name: str) -> npt.NDArray[np.float64]:
        start, names = self.offsets[device]
        return self.values[:, start + names.index(name)]


def record(sim: FactorySimulator, steps: int) -> History:
    ts, values, quality = [], [], []
    offsets: dict[str, tuple[int, tuple[str, ...]]] = {}
    for frames in sim.run_until(sim.now_ns + steps * sim.period_ns):
        if not offsets:
            start = 0
            for f in frames:
                offsets[f.device] = (start, f.names)
                start += len(f.names)
        ts.append(frames[0].ts_ns)
        values.append(np.concatenate([f.values for f in frames]))
        quality.append(np.concatenate([f.quality for f in frames]))
    return History(sim, np.array(ts), np.array(values), np.array(quality), offsets)


@pytest.fixture(scope="module")
def hours4() -> History:
    """Four hours at 1 Hz, the demo's own rate."""
    return record(FactorySimulator(seed=3, start_ns=START), 4 * 3600)


@pytest.fixture(scope="module")
def days3() -> History:
    """Three days at one sample every 30 s: long enough for faults and failed polls."""
    return record(FactorySimulator(seed=5, start_ns=START, period_s=30.0), 3 * 2880)


def devices(h: History) -> list[str]:
    return [m.name for m in h.sim.machines()]


def test_public_names() -> None:
    for name in simulator.__all__:
        assert hasattr(simulator, name)
    assert {"FactorySimulator", "Frame", "MachineDef", "SignalDef"} <= set(simulator.__all__)


def test_layout_three_lines_twenty_machines_about_500_signals() -> None:
    sim = FactorySimulator(seed=0, start_ns=START)
    machines = sim.machines()
    assert (sim.enterprise, sim.site, sim.area) == ("Demo Manufacturing", "Plant 1", "Assembly")
    assert len(machines) == 20
    assert sorted({m.line for m in machines}) == ["line-1", "line-2", "line-3"]
    assert len({m.name for m in machines}) == 20
    assert 450 <= sim.signal_count() <= 600
    assert sim.signal_count() == sum(len(m.signals) for m in machines)
    types = sim.device_types()
    assert len(types) >= 4
    for m in machines:
        names = [s.name for s in m.signals]
        assert len(names) == len(set(names)), m.name
        assert 20 <= len(names) <= 30
        assert types[m.device_type] == m.signals
        assert {"state", "good_count", "scrap_count", "total_count", "vib_x_rms"} <= set(names)


def test_every_frame_matches_its_machine() -> None:
    sim = FactorySimulator(seed=0, start_ns=START)
    frames = sim.step()
    assert [f.device for f in frames] == [m.name for m in sim.machines()]
    for f, m in zip(frames, sim.machines(), strict=True):
        assert isinstance(f, Frame)
        assert f.names == tuple(s.name for s in m.signals)
        assert f.values.dtype == np.float64
        assert f.values.shape == (len(m.signals),)
        assert f.quality.dtype == np.uint32
        assert f.quality.shape == (len(m.signals),)


def test_timestamps_advance_by_one_period() -> None:
    sim = FactorySimulator(seed=0, start_ns=START, period_s=0.5)
    ts = [frames[0].ts_ns for frames in sim.run_until(START + 10 * 500_000_000)]
    assert ts == [START + i * 500_000_000 for i in range(1, 11)]
    assert sim.now_ns == START + 5_000_000_000
    assert list(sim.run_until(START)) == []  # already there: nothing more to step


def test_counters_monotonic_and_total_is_good_plus_scrap(hours4: History) -> None:
    for d in devices(hours4):
        good, scrap, total = (
            hours4.col(d, n) for n in ("good_count", "scrap_count", "total_count")
        )
        ok = ~np.isnan(total)
        good, scrap, total = good[ok], scrap[ok], total[ok]
        np.testing.assert_array_equal(total, good + scrap)
        assert (np.diff(good) >= 0).all(), d
        assert (np.diff(scrap) >= 0).all(), d
        assert (total == np.round(total)).all()
    made = [
        hours4.col(d, "total_count")[-1] - hours4.col(d, "total_count")[0] for d in devices(hours4)
    ]
    assert min(made) > 0  # every machine produced something in four hours


def test_scrap_is_a_small_fraction(hours4: History) -> None:
    good = sum(
        np.nanmax(hours4.col(d, "good_count")) - np.nanmin(hours4.col(d, "good_count"))
        for d in devices(hours4)
    )
    scrap = sum(
        np.nanmax(hours4.col(d, "scrap_count")) - np.nanmin(hours4.col(d, "scrap_count"))
        for d in devices(hours4)
    )
    assert 0.002 < scrap / (good + scrap) < 0.08


def test_parts_are_made_only_while_running(hours4: History) -> None:
    for d in devices(hours4):
        total, state = hours4.col(d, "total_count"), hours4.col(d, "state")
        both = ~np.isnan(total[1:]) & ~np.isnan(total[:-1])
        advanced = both & (np.diff(total) > 0)
        assert advanced.any(), d
        assert (state[1:][advanced] == RUNNING).all(), d


def dwell_lengths(state: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Run lengths of a state series, failed polls carried forward, first and last run dropped."""
    s = state.copy()
    for i in np.flatnonzero(np.isnan(s)):
        s[i] = s[i - 1]
    edges = np.flatnonzero(np.diff(s) != 0)
    return np.diff(edges)


def test_states_dwell_for_minutes_not_seconds(hours4: History) -> None:
    runs = np.concatenate([dwell_lengths(hours4.col(d, "state")) for d in devices(hours4)])
    assert len(runs) > 40  # states do change
    assert runs.mean() > 30
    assert np.median(runs) > 30
    states = np.concatenate([hours4.col(d, "state") for d in devices(hours4)])
    seen = set(np.unique(states[~np.isnan(states)]).astype(int))
    assert seen <= {0, 1, 2, 3, 4, 5}
    assert {1, 2, 3, 4, 5} <= seen
    assert 0.6 < np.nanmean(states == RUNNING) < 0.95


def test_values_are_rounded_like_a_plc_reports_them(hours4: History) -> None:
    for name, decimals in (("motor_temp", 2), ("vib_x_rms", 3), ("state", 0), ("energy_total", 3)):
        v = np.concatenate([hours4.col(d, name) for d in devices(hours4)])
        v = v[~np.isnan(v)] * 10**decimals
        np.testing.assert_allclose(v, np.round(v), atol=1e-6)


def test_temperatures_are_smooth_and_plausible(hours4: History) -> None:
    for d in devices(hours4):
        for name in ("motor_temp", "bearing_temp", "ambient_temp"):
            t = hours4.col(d, name)
            t = t[~np.isnan(t)]
            assert t.min() > 10, (d, name)
            assert t.max() < 120, (d, name)
            assert np.abs(np.diff(t)).max() < 2.0, (d, name)  # a thermal mass, not a random walk


def test_failed_polls_are_bad_quality_with_nan_values(days3: History) -> None:
    bad = days3.quality == BAD
    assert bad.any()
    assert set(np.unique(days3.quality)) <= {0, BAD}
    np.testing.assert_array_equal(np.isnan(days3.values), bad)
    assert bad.mean() < 0.01  # rare
    # a failed poll takes the whole device: every signal of that device at that instant
    for d, (start, names) in days3.offsets.items():
        block = bad[:, start : start + len(names)]
        assert (block.all(axis=1) == block.any(axis=1)).all(), d


def test_developing_fault_raises_vibration_before_breakdown(days3: History) -> None:
    hour = 120  # steps of 30 s
    seen = 0
    for d in devices(days3):
        fault, state = days3.col(d, "fault_code"), days3.col(d, "state")
        vib, bearing = days3.col(d, "vib_x_rms"), days3.col(d, "bearing_temp")
        running = state == RUNNING
        baseline = np.nanmedian(vib[running])
        for t in np.flatnonzero((fault[1:] == BEARING_FAILURE) & (fault[:-1] != BEARING_FAILURE)):
            t += 1
            if t < 4 * hour:
                continue
            assert state[t] == DOWN
            last = running[t - hour : t]
            early = running[t - 4 * hour : t - 3 * hour]
            late_vib = np.nanmean(vib[t - hour : t][last])
            assert late_vib > 1.5 * baseline, d
            assert np.nanmean(vib[t - 4 * hour : t - 3 * hour][early]) < late_vib, d  # gradual
            assert np.nanmean(bearing[t - hour : t][last]) > np.nanmedian(bearing[running]), d
            seen += 1
    assert seen >= 2  # a few a day across the factory


def test_fault_severity_grows_then_resets_after_maintenance() -> None:
    sim = FactorySimulator(seed=5, start_ns=START, period_s=60.0)
    sev = np.array([sim.fault_severity for _ in sim.run_until(START + 2 * 86_400 * 10**9)])
    assert (sev >= 0).all()
    assert (sev <= 1).all()
    rising = np.diff(sev, axis=0)
    # severity only grows, except when maintenance sets it back to zero
    assert ((rising >= 0) | (sev[1:] == 0)).all()
    assert (sev == 1).any()
    assert (rising < 0).any()


def test_deterministic_for_a_seed() -> None:
    a = record(FactorySimulator(seed=7, start_ns=START, period_s=10.0), 800)
    b = record(FactorySimulator(seed=7, start_ns=START, period_s=10.0), 800)
    c = record(FactorySimulator(seed=8, start_ns=START, period_s=10.0), 800)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.quality, b.quality)
    assert not np.array_equal(a.values, c.values, equal_nan=True)


def test_bad_arguments_rejected() -> None:
    with pytest.raises(ValueError, match="period_s"):
        FactorySimulator(period_s=0)
    with pytest.raises(ValueError, match="machine per line"):
        FactorySimulator(lines=4, machines=3)


@pytest.mark.parametrize(("lines", "machines"), [(1, 1), (1, 5), (2, 9), (4, 30)])
def test_other_sizes_work(lines: int, machines: int) -> None:
    sim = FactorySimulator(seed=1, lines=lines, machines=machines, start_ns=START)
    assert len(sim.machines()) == machines
    assert len({m.line for m in sim.machines()}) == lines
    assert len({m.name for m in sim.machines()}) == machines
    for _ in range(50):
        frames = sim.step()
    assert len(frames) == machines
