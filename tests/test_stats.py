"""xrlhf/stats.py against values computed by hand (the arithmetic is in each test)."""
import math

import pytest

from xrlhf.stats import (A_HIGHER, B_HIGHER, CANNOT_TELL, WITHIN_NOISE, difference_within_noise, kl_spikes,
                         mean_ci, prompt_wins, rose_and_fell, smooth, steps_to_fraction, t_critical, win_rate,
                         win_rate_ci)


def test_t_critical_matches_table():
    # printed two-sided 95% table: df 1 → 12.706, 2 → 4.303, 3 → 3.182, 10 → 2.228, 30 → 2.042
    for df, t in ((1, 12.706), (2, 4.303), (3, 3.182), (10, 2.228), (30, 2.042)):
        assert t_critical(0.95, df) == pytest.approx(t, abs=1e-3)
    # df 2 in closed form: P(|T|<t) = t/√(2+t²) = 0.95 → t = 0.95·√2/√(1−0.95²) = 4.30265
    assert t_critical(0.95, 2) == pytest.approx(0.95 * math.sqrt(2) / math.sqrt(1 - 0.95 ** 2), rel=1e-9)
    assert t_critical(0.95, 2.9) == t_critical(0.95, 2)  # Welch df is floored
    assert t_critical(0.95, 2 - 1e-12) == t_critical(0.95, 2)  # but rounding error is not


def test_mean_ci_three_values():
    # mean 2, s = 1, half width = t(0.975, 2)·s/√n = 4.303/√3 = 2.4842
    mean, lo, hi = mean_ci([1, 2, 3])
    assert mean == 2
    assert hi - mean == pytest.approx(4.30265 / math.sqrt(3), rel=1e-5)
    assert mean - lo == pytest.approx(hi - mean)


def test_mean_ci_single_seed_and_missing():
    assert mean_ci([5.0])[0] == 5.0 and math.isnan(mean_ci([5.0])[1]) and math.isnan(mean_ci([5.0])[2])
    assert all(math.isnan(x) for x in mean_ci([None, float("nan")]))
    # None dropped: [1, 3] → mean 2, s = √2, half = 12.706·√2/√2 = 12.706
    mean, lo, hi = mean_ci([1, None, 3])
    assert mean == 2 and hi - mean == pytest.approx(12.7062, abs=1e-3)


def test_win_rate_ties_and_nulls():
    # per prompt (a+b)/2: (0.9+0.7)/2 = 0.8, tie (0.5+0.5)/2 = 0.5, (0.6+0.2)/2 = 0.4; two prompts miss an order
    p_first = [0.9, 0.5, None, 1.0, 0.6]
    p_second = [0.7, 0.5, 0.4, None, 0.2]
    wins, skipped = prompt_wins(p_first, p_second)
    assert wins == pytest.approx([0.8, 0.5, 0.4]) and skipped == 2
    assert win_rate(p_first, p_second) == pytest.approx(1.7 / 3)
    assert math.isnan(win_rate([None], [0.3]))
    with pytest.raises(ValueError):
        prompt_wins([0.1], [])


def test_win_rate_ci_wilson():
    # p = 2.5/4 = 0.625, n = 4, z = 1.959964, z² = 3.841459
    # centre = (0.625 + z²/8) / (1 + z²/4) = 1.105182 / 1.960365 = 0.563763
    # half = z/(1 + z²/4) · √(0.625·0.375/4 + z²/64) = 0.999795 · 0.344407 = 0.344337
    p, lo, hi = win_rate_ci([1, 1, 0, 0.5])
    assert p == 0.625
    assert lo == pytest.approx(0.563763 - 0.344337, abs=1e-5)
    assert hi == pytest.approx(0.563763 + 0.344337, abs=1e-5)
    # every prompt won: hi clips to 1, lo = 1.480182/1.960365 − 0.999795·√(z²/64) = 0.755061 − 0.244946
    p, lo, hi = win_rate_ci([1, 1, 1, 1])
    assert hi == 1.0 and lo == pytest.approx(0.510115, abs=1e-5)


def test_difference_b_higher():
    # diff = 2 − 5 = −3; var/n = 1/3 each, se = √(2/3) = 0.8165; Welch df = (2/3)² / (2·(1/3)²/2) = 4
    # t(0.975, 4) = 2.776 → half = 2.2669 → [−5.267, −0.733] excludes 0
    d = difference_within_noise([1, 2, 3], [4, 5, 6])
    assert d.diff == -3 and d.verdict == B_HIGHER
    assert d.lo == pytest.approx(-3 - 2.77645 * math.sqrt(2 / 3), abs=1e-4)
    assert difference_within_noise([4, 5, 6], [1, 2, 3]).verdict == A_HIGHER
    # t = 3 / 0.8165 = 3.674, df 4: two-sided p = 0.02131 (a printed t table puts 3.674 between 0.02 and 0.025)
    assert d.p == pytest.approx(0.0213116, abs=1e-6)


def test_difference_within_noise_and_cannot_tell():
    # diff = 2 − 2.25 = −0.25; var/n = 2/2 = 1 and 0.125/2 = 0.0625; df = 1.0625² / (1 + 0.0625²) = 1.12 → 1
    # half = 12.706·√1.0625 = 13.097 → contains 0
    d = difference_within_noise([1, 3], [2, 2.5])
    assert d.verdict == WITHIN_NOISE
    assert d.hi - d.diff == pytest.approx(12.7062 * math.sqrt(1.0625), abs=1e-3)
    one = difference_within_noise([1], [2, 3])
    assert one.verdict == CANNOT_TELL and one.diff == -1.5 and math.isnan(one.lo)
    assert difference_within_noise([], [1, 2]).verdict == CANNOT_TELL


def test_smooth_is_trailing_and_skips_missing():
    # window 2: [1], [1, –], [–, 3], [3, 5] → 1, 1, 3, 4
    assert smooth([1, None, 3, 5], 2) == [1, 1, 3, 4]
    # window 3: i=2 → (1+3)/2 = 2, i=3 → (3+5)/2 = 4
    assert smooth([1, None, 3, 5], 3) == [1, 1, 2, 4]
    assert math.isnan(smooth([None, 2], 1)[0])
    with pytest.raises(ValueError):
        smooth([1], 0)


def test_steps_to_fraction():
    # start 0, final 1 → target 0.9, first reached at index 3 (0.95)
    assert steps_to_fraction([0, 0.2, 0.5, 0.95, 1.0]) == 3
    # window 2 smooths to [0, 0.1, 0.35, 0.725, 0.975] → target 0.8775 → index 4
    assert steps_to_fraction([0, 0.2, 0.5, 0.95, 1.0], window=2) == 4
    # falling: start 1, final 0 → target 0.1, first ≤ 0.1 at index 3
    assert steps_to_fraction([1.0, 0.8, 0.15, 0.05, 0.0]) == 3
    assert steps_to_fraction([0.5, 0.5, 0.5]) is None
    assert steps_to_fraction([None, None]) is None


def test_kl_spikes():
    # finite values sorted [0.1, 0.1, 0.11, 0.12, 0.13, 0.5] → median 0.115
    # |x − 0.115| sorted [0.005, 0.005, 0.015, 0.015, 0.015, 0.385] → MAD 0.015 → threshold 0.115 + 3·0.015 = 0.16
    assert kl_spikes([0.1, 0.12, 0.11, 0.5, 0.1, None, 0.13]) == [3]
    assert kl_spikes([]) == []
    assert kl_spikes([0.2, 0.2, 0.2]) == []


def test_rose_and_fell():
    # a rose in both seeds (mean 0.15), b fell in both (−0.09), c disagrees across seeds, d moved < 0.05
    deltas = {"a": [0.1, 0.2], "b": [-0.1, -0.08], "c": [0.2, -0.01], "d": [0.01, 0.02]}
    assert rose_and_fell(deltas) == (["a"], ["b"])


def test_position_consistency_counts_orders_that_agree():
    from xrlhf.stats import position_consistency

    # agree (first wins both), disagree (position), agree (tie both), disagree (position), missing: skipped
    assert position_consistency([1.0, 1.0, 0.5, 0.0, None], [0.9, 0.0, 0.5, 1.0, 0.3]) == pytest.approx(2 / 4)
    # a judge that always prefers the first shown: p_first = 1, p_second = 1 - 1 = 0 everywhere
    assert position_consistency([1.0] * 5, [0.0] * 5) == 0.0
    assert math.isnan(position_consistency([None], [1.0]))


def test_length_controlled_win_rate_by_hand():
    from xrlhf.stats import length_controlled_win_rate

    # wins [1, 1, 0, .5] at Δlength [4, 0, -2, 1]: mean win .625, mean Δ .75, Σ(Δ-Δ̄)² = 18.75,
    # Σ(w-w̄)(Δ-Δ̄) = 2.625, slope .14, fit at Δ = 0: .625 - .14·.75 = .52
    assert length_controlled_win_rate([1.0, 1.0, 0.0, 0.5], [4, 0, -2, 1]) == pytest.approx(0.52)
    # every win bought by length: the longer answer always wins, symmetric lengths -> a tie at equal length
    assert length_controlled_win_rate([1.0, 0.0, 1.0, 0.0], [10, -10, 10, -10]) == pytest.approx(0.5)
    # equal lengths: nothing to regress, the plain rate; the fit is clipped to [0, 1]
    assert length_controlled_win_rate([1.0, 0.0, 1.0], [3, 3, 3]) == pytest.approx(2 / 3)
    assert length_controlled_win_rate([1.0, 1.0, 0.0], [1, 2, 30]) == 1.0
    assert math.isnan(length_controlled_win_rate([None], [1]))


def test_interpolate_at_and_step_noise():
    from xrlhf.stats import interpolate_at, step_noise

    assert interpolate_at([0, 10, 20], [0.0, 1.0, 3.0], 15) == pytest.approx(2.0)
    assert interpolate_at([20, 0, 10], [3.0, 0.0, 1.0], 10) == pytest.approx(1.0)  # unordered points are sorted
    assert math.isnan(interpolate_at([0, 10], [0.0, 1.0], 11)) and math.isnan(interpolate_at([], [], 0))
    assert step_noise([1, 2, 3, 4, 5]) == pytest.approx(0.0)  # a steady climb is no noise
    # differences +1, -1, +1: sample variance 4/3, / 2 -> 2/3
    assert step_noise([0, 1, 0, 1]) == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(step_noise([1, None, 2]))


def test_t_p_value_and_holm_by_hand():
    from xrlhf.stats import holm, t_p_value

    # [1, 2, 3]: t = 2 / (1/√3) = 3.4641, df 2: P(|T| < t) = t/√(2 + t²) = 0.92582 → p = 0.07418
    assert t_p_value([1, 2, 3]) == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-9)
    assert t_p_value([-1, -2, -3]) == t_p_value([1, 2, 3])
    assert t_p_value([0.5, 0.5]) == 0.0 and t_p_value([0, 0]) == 1.0 and math.isnan(t_p_value([1.0]))
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06; a nan is not counted
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.02, math.nan, 0.6])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)


def test_bootstrap_mean_ci_is_seeded_and_brackets_the_mean():
    from xrlhf.stats import bootstrap_mean_ci

    assert bootstrap_mean_ci([0.25] * 5) == (0.25, 0.25, 0.25)
    xs = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    mean, lo, hi = bootstrap_mean_ci(xs, resamples=2000)
    assert mean == 0.625 and 0.0 <= lo < mean < hi <= 1.0
    assert bootstrap_mean_ci(xs, resamples=2000) == (mean, lo, hi)  # seeded
    assert math.isnan(bootstrap_mean_ci([1.0])[1]) and math.isnan(bootstrap_mean_ci([None])[0])


def test_linear_trend_by_hand():
    from xrlhf.stats import linear_trend

    assert linear_trend([1, 2, 3, 4]) == pytest.approx((1.0, 0.0))
    # [0, 1, 0, 1]: x̄ 1.5, ȳ 0.5, Sxy 1, Sxx 5 → slope 0.2; residuals −0.2, 0.6, −0.6, 0.2 → √(0.8 / 2)
    assert linear_trend([0, 1, 0, 1]) == pytest.approx((0.2, math.sqrt(0.4)))
    # a missing value keeps the others at their own steps: 1, _, 3, 4 lie on y = x + 1
    assert linear_trend([1, None, 3, 4]) == pytest.approx((1.0, 0.0))
    assert all(math.isnan(v) for v in linear_trend([1, 2]))
