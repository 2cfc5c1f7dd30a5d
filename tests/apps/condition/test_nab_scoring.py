"""NAB scoring: tiny cases worked by hand from NAB's definitions, and published figures.

The scaled sigmoid is S(x) = 2 / (1 + exp(5 x)) - 1 (and -1 for x > 3); it is computed here
with math.exp from that formula, never with the module's own function.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from shopfloor.apps.condition.nab_scoring import (
    PROFILES,
    Profile,
    ScoredFile,
    best_threshold,
    normalize,
    probationary_length,
    scaled_sigmoid,
    score_by_threshold,
    score_corpus,
    sweep_file,
)
from shopfloor.core.errors import BadInput

STD = PROFILES["standard"]
NAB = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "nab"


def s(x: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


MAX_TP = s(-1.0)  # 2 / (1 + e^-5) - 1 = 0.986614...


def tiny(scores: dict[int, float], windows: list[tuple[int, int]] | None = None) -> ScoredFile:
    """20 rows at t = 0..19, so 3 probationary rows (floor(0.15 * 20) = 3 < 750)."""
    arr = np.zeros(20)
    for i, v in scores.items():
        arr[i] = v
    return ScoredFile("tiny.csv", np.arange(20, dtype=np.int64), arr, windows or [(10, 14)])


def raw(f: ScoredFile, profile: Profile = STD) -> tuple[float, float]:
    return best_threshold([sweep_file(f, profile)], profile)


def at(f: ScoredFile, threshold: float, profile: Profile = STD) -> float:
    """The total when rows scoring >= threshold are the detections."""
    thresholds, totals = score_by_threshold([sweep_file(f, profile)], profile)
    return float(totals[thresholds.tolist().index(threshold)])


# With the other 16 scorable rows at 0, threshold 0 detects every row 3..19: the window at its
# start (+1), rows 3..9 as false positives with no window before them (7 * -0.11 = -0.77) and
# rows 15..19 at distances 0.25, 0.5, 0.75, 1.0, 1.25 past the window (width 5, so /4):
# S = -0.554600, -0.848284, -0.954046, -0.986614, -0.996146, sum -4.339690, times 0.11.
ALL_ROWS = 1.0 - 0.77 + 0.11 * sum(s(d) for d in (0.25, 0.5, 0.75, 1.0, 1.25))


def test_profiles_are_nabs() -> None:
    # config/profiles.json of NAB 1.x
    assert PROFILES["standard"] == Profile("standard", 1.0, 0.11, 1.0)
    assert PROFILES["reward_low_FP_rate"] == Profile("reward_low_FP_rate", 1.0, 0.22, 1.0)
    assert PROFILES["reward_low_FN_rate"] == Profile("reward_low_FN_rate", 1.0, 0.11, 2.0)


def test_scaled_sigmoid_values() -> None:
    # NAB's docstring: S(-1) = 0.98661, S(-0.5) = 0.84828, S(0) = 0, S(1) = -0.98661
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == pytest.approx(s(3.0))  # 3 itself is still on the curve
    assert scaled_sigmoid(3.0001) == -1.0


def test_probationary_length() -> None:
    assert probationary_length(20) == 3  # floor(3.0)
    assert probationary_length(4032) == 604  # floor(604.8)
    assert probationary_length(22695) == 750  # capped at 0.15 * 5000


def test_detection_at_window_start_is_worth_tp() -> None:
    # Window rows 10..14, width 5. Row 10: position -(14 - 10 + 1) / 5 = -1 -> S(-1)/S(-1) = 1.
    threshold, score = raw(tiny({10: 1.0}))
    assert threshold == 1.0
    assert score == pytest.approx(1.0)


def test_detection_at_window_end() -> None:
    # Row 14: position -(14 - 14 + 1) / 5 = -0.2 -> S(-0.2) / S(-1)
    # = (2 / (1 + e^-1) - 1) / 0.986614 = 0.462117 / 0.986614 = 0.468387
    expected = (2.0 / (1.0 + math.exp(-1.0)) - 1.0) / MAX_TP
    assert expected == pytest.approx(0.468387, abs=1e-6)
    assert at(tiny({14: 1.0}), 1.0) == pytest.approx(expected)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # Rows 12 and 13 detected: only row 12 counts, position -(14 - 12 + 1) / 5 = -0.6.
    expected = s(-0.6) / MAX_TP
    assert at(tiny({12: 1.0, 13: 1.0}), 1.0) == pytest.approx(expected)


def test_false_positive_before_any_window() -> None:
    # Row 5 precedes every window: -fp = -0.11; the window is missed: -fn = -1.
    # At threshold 1.0 the total is -1.11, worse than detecting nothing (-1); detecting every
    # row (threshold 0) is best here: -0.247366.
    sweep = sweep_file(tiny({5: 1.0}), STD)
    thresholds, totals = score_by_threshold([sweep], STD)
    assert pytest.approx(-0.247366, abs=1e-6) == ALL_ROWS
    assert thresholds.tolist() == [1.1, 1.0, 0.0]
    assert totals == pytest.approx([-1.0, -1.11, ALL_ROWS])
    assert raw(tiny({5: 1.0})) == (0.0, pytest.approx(ALL_ROWS))


def test_false_positive_after_a_window() -> None:
    # Row 17, 3 rows after the window's end (14): distance 3 / (5 - 1) = 0.75,
    # S(0.75) = 2 / (1 + e^3.75) - 1 = -0.954046; times fp 0.11 = -0.104945; plus the miss -1.
    sweep = sweep_file(tiny({17: 1.0}), STD)
    _, totals = score_by_threshold([sweep], STD)
    assert s(0.75) == pytest.approx(-0.954046, abs=1e-6)
    assert totals[1] == pytest.approx(-1.0 + 0.11 * s(0.75))


def test_probationary_rows_are_ignored() -> None:
    # Row 1 is in the probationary period: a 1.0 there changes nothing.
    sweep = sweep_file(tiny({1: 1.0}), STD)
    assert sweep.scores.size == 17  # rows 3..19
    thresholds, totals = score_by_threshold([sweep], STD)
    assert thresholds.tolist() == [1.1, 0.0]  # the 1.0 is not even a candidate
    assert totals == pytest.approx([-1.0, ALL_ROWS])


def test_window_partly_in_probation() -> None:
    # Window rows 2..6 (width 5), rows 0..2 probationary. Row 3: position -(6 - 3 + 1) / 5 = -0.8
    # -> S(-0.8) / S(-1) = 0.964028 / 0.986614 = 0.977107
    f = tiny({3: 1.0}, windows=[(2, 6)])
    assert at(f, 1.0) == pytest.approx(s(-0.8) / MAX_TP)
    assert s(-0.8) / MAX_TP == pytest.approx(0.977107, abs=1e-6)


def test_threshold_optimisation_by_hand() -> None:
    # Row 5 (FP, no window before) scores 0.95, row 10 (window start) 0.9, the rest 0.
    # threshold 1.1: -1;  0.95: -1 - 0.11 = -1.11;  0.9: 1 - 0.11 = 0.89;
    # 0.0 (all 17 rows): ALL_ROWS = -0.247366. Best: 0.89 at threshold 0.9.
    f = tiny({5: 0.95, 10: 0.9})
    thresholds, totals = score_by_threshold([sweep_file(f, STD)], STD)
    assert thresholds.tolist() == [1.1, 0.95, 0.9, 0.0]
    assert totals == pytest.approx([-1.0, -1.11, 0.89, ALL_ROWS])
    assert raw(f) == (0.9, pytest.approx(0.89))
    # Normalised: the null detector (0.5 everywhere) has two candidate thresholds, 1.1 (-1)
    # and 0.5 (every row: ALL_ROWS = -0.247366), and NAB's optimiser gives it the better one;
    # perfect is 1 window * tp = 1. 100 * (0.89 + 0.247366) / (1 + 0.247366) = 91.1814
    result = score_corpus([f])["standard"]
    assert result.null_raw == pytest.approx(ALL_ROWS)
    assert result.perfect == 1.0
    assert result.normalized == pytest.approx(91.1814, abs=1e-4)


def test_equal_totals_keep_the_highest_threshold() -> None:
    # Row 10 (window start) at 0.9 and row 12 (same window, later) at 0.8: both thresholds
    # total 1.0, since only the earliest detection of a window counts. NAB's stable sort keeps
    # the first, higher one.
    f = tiny({10: 0.9, 12: 0.8})
    thresholds, totals = score_by_threshold([sweep_file(f, STD)], STD)
    assert thresholds[1:3].tolist() == [0.9, 0.8]
    assert totals[1] == totals[2] == pytest.approx(1.0)
    assert raw(f)[0] == 0.9


def test_low_fn_profile_doubles_the_miss() -> None:
    prof = PROFILES["reward_low_FN_rate"]
    thresholds, totals = score_by_threshold([sweep_file(tiny({}), prof)], prof)
    assert thresholds.tolist() == [1.1, 0.0]
    assert totals == pytest.approx([-2.0, ALL_ROWS])  # detected, the miss weight is moot
    result = score_corpus([tiny({10: 1.0})])["reward_low_FN_rate"]
    # null: every row detected beats -2 here (ALL_ROWS); a perfect raw of 1 is still 100
    assert result.null_raw == pytest.approx(ALL_ROWS)
    assert result.normalized == pytest.approx(100.0)


def test_low_fp_profile_doubles_the_false_positive() -> None:
    prof = PROFILES["reward_low_FP_rate"]
    sweep = sweep_file(tiny({5: 1.0}), prof)
    assert score_by_threshold([sweep], prof)[1][1] == pytest.approx(-1.22)


def test_null_and_perfect_normalise_to_0_and_100() -> None:
    rng = np.random.default_rng(3)
    files = []
    for k in range(3):
        n = 200 + 50 * k
        ts = np.arange(n, dtype=np.int64) * 60
        windows = [(int(ts[60]), int(ts[80])), (int(ts[150]), int(ts[170]))]
        files.append(ScoredFile(f"f{k}", ts, rng.random(n), windows))
    null = [ScoredFile(f.name, f.timestamps, np.full(f.scores.size, 0.5), f.windows) for f in files]
    perfect = []
    for f in files:
        sc = np.zeros(f.scores.size)
        for a, _ in f.windows:
            sc[np.flatnonzero(f.timestamps == a)[0]] = 1.0
        perfect.append(ScoredFile(f.name, f.timestamps, sc, f.windows))
    for name in PROFILES:
        assert score_corpus(null)[name].normalized == pytest.approx(0.0)
        assert score_corpus(perfect)[name].normalized == pytest.approx(100.0)


def test_window_wholly_in_probation_counts_only_in_perfect() -> None:
    # NAB's perfect score counts every labelled window; the null detector cannot miss a
    # window it never scores.
    f = tiny({}, windows=[(0, 2)])
    result = score_corpus([f])["standard"]
    assert result.null_raw == 0.0
    assert result.perfect == 1.0


def test_corpus_score_matches_brute_force() -> None:
    """The vectorised sweep against a plain loop over thresholds written from the rules."""
    rng = np.random.default_rng(7)
    files = []
    for k in range(4):
        n = 120
        ts = np.arange(n, dtype=np.int64)
        windows = [(30, 41), (70, 70 + 5 + k)] if k != 2 else []
        files.append(ScoredFile(f"f{k}", ts, np.round(rng.random(n), 2), windows))
    for prof in PROFILES.values():
        thresholds, totals = score_by_threshold([sweep_file(f, prof) for f in files], prof)
        for t, total in zip(thresholds, totals, strict=True):
            assert total == pytest.approx(_brute_force(files, prof, t)), (prof.name, t)


def _brute_force(files: list[ScoredFile], prof: Profile, t: float) -> float:
    total = 0.0
    for f in files:
        n = f.scores.size
        p = min(math.floor(0.15 * n), 750)
        spans = [(int(a), int(b)) for a, b in f.windows]
        for lo, hi in spans:
            width = hi - lo + 1
            hits = [i for i in range(max(lo, p), hi + 1) if f.scores[i] >= t]
            if hits:
                total += s(-(hi - hits[0] + 1) / width) * prof.tp_weight / MAX_TP
            elif hi >= p:
                total -= prof.fn_weight
        for i in range(p, n):
            if f.scores[i] < t or any(lo <= i <= hi for lo, hi in spans):
                continue
            before = [(lo, hi) for lo, hi in spans if hi < i]
            if not before:
                total -= prof.fp_weight
            else:
                lo, hi = before[-1]
                d = (i - hi) / (hi - lo)
                total += (-1.0 if d > 3 else s(d)) * prof.fp_weight
    return total


def test_published_normalisation_figures() -> None:
    # NAB config/thresholds.json raw scores of contextOSE and results/final_results.json:
    # standard 46.167000006791156 -> 69.89956896844828 (null -116, perfect 116),
    # low FP 39.38696292192149 -> 66.97713919047413, low FN 22.67222031445549 ->
    # 73.18167250416667 (null -232).
    assert normalize(46.167000006791156, -116.0, 116.0) == pytest.approx(69.89956896844828)
    assert normalize(39.38696292192149, -116.0, 116.0) == pytest.approx(66.97713919047413)
    assert normalize(22.67222031445549, -232.0, 116.0) == pytest.approx(73.18167250416667)


@pytest.mark.skipif(not NAB.is_dir(), reason="NAB corpus not present")
def test_null_detector_on_the_real_corpus_matches_nab() -> None:
    # NAB config/thresholds.json: null raw scores -116 (standard), -116 (low FP), -232 (low FN)
    from shopfloor.apps.condition.nab_corpus import load_corpus, window_count

    corpus = load_corpus(NAB)
    files = [
        ScoredFile(c.name, c.timestamps, np.full(c.values.size, 0.5), c.windows) for c in corpus
    ]
    result = score_corpus(files, n_windows=window_count(NAB))
    assert window_count(NAB) == 116
    assert result["standard"].raw == -116.0
    assert result["reward_low_FP_rate"].raw == -116.0
    assert result["reward_low_FN_rate"].raw == -232.0
    assert all(r.normalized == 0.0 for r in result.values())


def test_bad_input() -> None:
    ts = np.arange(20, dtype=np.int64)
    with pytest.raises(BadInput, match="missing timestamp"):
        sweep_file(ScoredFile("x", ts, np.zeros(20), [(5, 99)]), STD)
    with pytest.raises(BadInput, match="ordered"):
        sweep_file(ScoredFile("x", ts, np.zeros(20), [(10, 14), (12, 16)]), STD)
    with pytest.raises(BadInput, match="scores for"):
        sweep_file(ScoredFile("x", ts, np.zeros(19), []), STD)
    with pytest.raises(BadInput, match="finite"):
        best_threshold([sweep_file(tiny({12: math.nan}), STD)], STD)
    with pytest.raises(BadInput, match="no files"):
        score_corpus([])
    with pytest.raises(BadInput, match="equal"):
        normalize(1.0, 2.0, 2.0)
