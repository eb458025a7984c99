"""Small statistics for comparing runs honestly: intervals over seeds and prompts, p-values with Holm's correction,
win rates, trends, convergence, KL spikes.

Pure functions over plain sequences; None and NaN mean "no value" everywhere and are dropped, never zero.
No SciPy: the t quantile comes from the closed-form Student t CDF for integer degrees of freedom
(Abramowitz & Stegun 26.7.3-4) inverted by bisection, the normal quantile from `statistics.NormalDist`.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

Number = float | int | None

WITHIN_NOISE = "within noise"
CANNOT_TELL = "cannot tell"
A_HIGHER = "a higher"
B_HIGHER = "b higher"


def finite(values: Sequence[Number]) -> list[float]:
    """The values that are real numbers (None, NaN and inf dropped)."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student t with integer df."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df == 1:
        return 2 * theta / math.pi
    if df % 2:
        # A = 2/π · (θ + sinθ · (cosθ + 2/3 cos³θ + 2·4/(3·5) cos⁵θ + … + cos^(ν-2)θ term))
        term = total = c
        for k in range(3, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        return 2 / math.pi * (theta + s * total)
    # A = sinθ · (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + … + cos^(ν-2)θ term)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return s * total


def t_critical(confidence: float, df: float) -> float:
    """Two-sided Student t critical value, e.g. t_critical(0.95, 2) = 4.303.

    A fractional df (Welch) is floored, which widens the interval slightly: the conservative side.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    nu = int(math.floor(df + 1e-9))  # a Welch df of 1.9999999999 is 2 computed in floating point
    if nu < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    hi = 1.0
    while _t_two_sided_mass(hi, nu) < confidence:
        hi *= 2
    lo = 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_mass(mid, nu) < confidence else (lo, mid)
    return (lo + hi) / 2


def _sample_var(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _finite_mean(values: Sequence[Number]) -> tuple[list[float], float]:
    """The finite values and their mean (nan when there are none)."""
    xs = finite(values)
    return xs, (sum(xs) / len(xs) if xs else math.nan)


def mean_ci(values: Sequence[Number], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student t interval of the mean over seeds.

    One value gives (mean, nan, nan): a single seed has no interval, and callers must say so.
    No values gives (nan, nan, nan).
    """
    xs, mean = _finite_mean(values)
    if len(xs) < 2:
        return mean, math.nan, math.nan
    half = t_critical(confidence, len(xs) - 1) * math.sqrt(_sample_var(xs) / len(xs))
    return mean, mean - half, mean + half


def t_p_value(values: Sequence[Number]) -> float:
    """Two-sided p of the one-sample t test of mean 0 over seeds; nan with fewer than two values, 0 when they
    agree exactly and are not 0."""
    xs = finite(values)
    if len(xs) < 2:
        return math.nan
    mean, var = sum(xs) / len(xs), _sample_var(xs)
    if var == 0:
        return 1.0 if mean == 0 else 0.0
    return 1 - _t_two_sided_mass(abs(mean) / math.sqrt(var / len(xs)), len(xs) - 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values in the input's order: the k-th smallest is max over j <= k of (m − j + 1)·p_(j),
    capped at 1. A family of claims holds at level α where its adjusted p < α; nan stays nan and is not counted."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    out, running = [math.nan] * len(p_values), 0.0
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - k) * p))
        out[i] = running
    return out


def bootstrap_mean_ci(values: Sequence[Number], confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap interval of the mean, resampling the values with replacement.

    With per-prompt differences (tuned − base on the same prompt, averaged over seeds) it is the paired bootstrap
    over prompts. Seeded, so a number written from it can be recomputed exactly; one value has no interval.
    """
    xs, mean = _finite_mean(values)
    if len(xs) < 2:
        return mean, math.nan, math.nan
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(xs, k=len(xs))) / len(xs) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return mean, _quantile(means, tail), _quantile(means, 1 - tail)


def _quantile(ys: list[float], q: float) -> float:
    """Linear interpolation between order statistics of sorted ys (numpy's default)."""
    pos = q * (len(ys) - 1)
    lo = math.floor(pos)
    return ys[lo] + (ys[min(lo + 1, len(ys) - 1)] - ys[lo]) * (pos - lo)


def prompt_wins(p_first: Sequence[Number], p_second: Sequence[Number]) -> tuple[list[float], int]:
    """Per-prompt win of the trained model over base, (p_first + p_second) / 2, and how many prompts were skipped.

    Averaging both presentation orders cancels the judge's position bias, so a prompt with either
    verdict missing is skipped (and counted) rather than scored from one biased order.
    A tie is 0.5 on both sides, so it counts half a win.
    """
    if len(p_first) != len(p_second):
        raise ValueError(f"p_first has {len(p_first)} prompts, p_second {len(p_second)}")
    wins, skipped = [], 0
    for a, b in zip(p_first, p_second):
        if len(finite([a, b])) == 2:
            wins.append((float(a) + float(b)) / 2)
        else:
            skipped += 1
    return wins, skipped


def win_rate(p_first: Sequence[Number], p_second: Sequence[Number]) -> float:
    """Mean per-prompt win over base (see `prompt_wins`); nan when no prompt has both verdicts."""
    wins, _ = prompt_wins(p_first, p_second)
    return sum(wins) / len(wins) if wins else math.nan


def win_rate_ci(per_prompt_wins: Sequence[Number], confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, lo, hi): Wilson score interval over prompts.

    Wilson, not t: a per-prompt win lies in [0, 1], so its variance is at most p(1-p) and Wilson is
    conservative for soft wins; unlike t it stays inside [0, 1] and does not collapse to zero width
    when every prompt is won.
    """
    xs = finite(per_prompt_wins)
    if not xs:
        return math.nan, math.nan, math.nan
    n, p = len(xs), sum(xs) / len(xs)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p, max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its Welch interval, a verdict (a higher | b higher | within noise | cannot tell) and
    the two-sided p of the Welch t statistic (for a Holm family; nan where there is no interval)."""

    diff: float
    lo: float
    hi: float
    verdict: str
    p: float = math.nan


def difference_within_noise(a_values: Sequence[Number], b_values: Sequence[Number],
                            confidence: float = 0.95) -> Difference:
    """Welch t interval of mean(a) - mean(b) across seeds; "within noise" when it contains 0.

    Fewer than two values on either side gives "cannot tell": one seed says nothing about seed noise.
    """
    a, b = finite(a_values), finite(b_values)
    if not a or not b:
        return Difference(math.nan, math.nan, math.nan, CANNOT_TELL)
    diff = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, math.nan, math.nan, CANNOT_TELL)
    va, vb = _sample_var(a) / len(a), _sample_var(b) / len(b)
    se2 = va + vb
    if se2 == 0:
        half, p = 0.0, 1.0 if diff == 0 else 0.0
    else:
        # Welch–Satterthwaite degrees of freedom, floored for p as for the interval (the conservative side)
        df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        half = t_critical(confidence, df) * math.sqrt(se2)
        p = 1 - _t_two_sided_mass(abs(diff) / math.sqrt(se2), int(math.floor(df + 1e-9)))
    lo, hi = diff - half, diff + half
    verdict = WITHIN_NOISE if lo <= 0 <= hi else (A_HIGHER if diff > 0 else B_HIGHER)
    return Difference(diff, lo, hi, verdict, p)


def smooth(values: Sequence[Number], window: int) -> list[float]:
    """Trailing moving average (no look-ahead) over the last `window` finite values; nan until one is seen."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = []
    for i in range(len(values)):
        xs = finite(values[max(0, i - window + 1): i + 1])
        out.append(sum(xs) / len(xs) if xs else math.nan)
    return out


def steps_to_fraction(rewards: Sequence[Number], fraction: float = 0.9, window: int = 1) -> int | None:
    """Index of the first step where smoothed reward reaches start + fraction·(final − start).

    Start and final are the first and last smoothed values, so a falling reward "reaches" by going down.
    None when the reward did not move (final == start) or there are no values.
    """
    s = smooth(rewards, window)
    known = [i for i, x in enumerate(s) if math.isfinite(x)]
    if not known:
        return None
    start, final = s[known[0]], s[known[-1]]
    if final == start:
        return None
    target = start + fraction * (final - start)
    sign = 1 if final > start else -1
    return next(i for i in known if (s[i] - target) * sign >= 0)


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    mid = len(ys) // 2
    return ys[mid] if len(ys) % 2 else (ys[mid - 1] + ys[mid]) / 2


def kl_spikes(kl_series: Sequence[Number], k: float = 3.0) -> list[int]:
    """Indices where KL > median + k·MAD (MAD = median |x − median|, unscaled); missing values are never spikes."""
    xs = finite(kl_series)
    if not xs:
        return []
    med = _median(xs)
    threshold = med + k * _median([abs(x - med) for x in xs])
    return [i for i, v in enumerate(kl_series) if v is not None and math.isfinite(v) and v > threshold]


def rose_and_fell(deltas: dict[str, Sequence[Number]], tol: float = 0.05) -> tuple[list[str], list[str]]:
    """Dimensions whose late − early change, per seed, rose (or fell) by more than `tol` on average, same sign in every seed."""
    rose, fell = [], []
    for dim, values in deltas.items():
        xs = finite(values)
        if not xs:
            continue
        mean = sum(xs) / len(xs)
        if mean > tol and all(x > 0 for x in xs):
            rose.append(dim)
        elif mean < -tol and all(x < 0 for x in xs):
            fell.append(dim)
    return rose, fell


# Below this share of prompts whose two presentation orders name the same winner, the pairwise judge's verdicts
# follow position more than content: a judge that flips a fair coin per order agrees with itself half the time.
MIN_POSITION_CONSISTENCY = 0.5


def position_consistency(p_first: Sequence[Number], p_second: Sequence[Number]) -> float:
    """Share of prompts (with both verdicts) whose two orders agree: the same response preferred, or a tie both
    times. A judge that only follows position (always the first) scores 0; nan when no prompt has both."""
    pairs = [(float(a), float(b)) for a, b in zip(p_first, p_second) if len(finite([a, b])) == 2]
    if not pairs:
        return math.nan
    agree = sum(1 for a, b in pairs if (a > 0.5) == (b > 0.5) and (a < 0.5) == (b < 0.5))
    return agree / len(pairs)


def length_controlled_win_rate(wins: Sequence[Number], length_diffs: Sequence[Number]) -> float:
    """Win rate with response length regressed out: the OLS fit win ≈ a + b·Δlength (Δ = model − opponent tokens,
    per prompt) read at Δ = 0, i.e. the win rate a response of the opponent's length would get; clipped to [0, 1].

    Equal lengths everywhere leave nothing to regress: the plain mean. nan without a prompt that has both values.
    """
    pairs = [(float(w), float(d)) for w, d in zip(wins, length_diffs) if len(finite([w, d])) == 2]
    if not pairs:
        return math.nan
    w_mean = sum(w for w, _ in pairs) / len(pairs)
    d_mean = sum(d for _, d in pairs) / len(pairs)
    var = sum((d - d_mean) ** 2 for _, d in pairs)
    if var == 0:
        return w_mean
    slope = sum((w - w_mean) * (d - d_mean) for w, d in pairs) / var
    # a = mean(w) − b·mean(Δ): the fitted win at Δ = 0
    return min(1.0, max(0.0, w_mean - slope * d_mean))


def interpolate_at(xs: Sequence[Number], ys: Sequence[Number], x: float) -> float:
    """y at x by linear interpolation between the points (x ascending); nan outside their range or without points."""
    pts = sorted((float(a), float(b)) for a, b in zip(xs, ys) if len(finite([a, b])) == 2)
    if not pts or not pts[0][0] <= x <= pts[-1][0]:
        return math.nan
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]


def step_noise(series: Sequence[Number]) -> float:
    """Step-to-step noise of a curve: std of its successive differences / √2 (a steady trend barely moves it, unlike
    the plain std); nan with fewer than three values."""
    xs = finite(series)
    if len(xs) < 3:
        return math.nan
    diffs = [b - a for a, b in zip(xs, xs[1:])]
    return math.sqrt(_sample_var(diffs) / 2)


def linear_trend(series: Sequence[Number]) -> tuple[float, float]:
    """(slope per step, residual std) of the least-squares line through a curve's finite values at their step
    index; the residual std has n − 2 degrees of freedom, so (nan, nan) below three values."""
    pts = [(float(i), float(v)) for i, v in enumerate(series) if v is not None and math.isfinite(v)]
    if len(pts) < 3:
        return math.nan, math.nan
    x_mean = sum(x for x, _ in pts) / len(pts)
    y_mean = sum(y for _, y in pts) / len(pts)
    slope = sum((x - x_mean) * (y - y_mean) for x, y in pts) / sum((x - x_mean) ** 2 for x, _ in pts)
    # residual e = y − (ȳ + b·(x − x̄)); s = √(Σe² / (n − 2))
    sse = sum((y - y_mean - slope * (x - x_mean)) ** 2 for x, y in pts)
    return slope, math.sqrt(sse / (len(pts) - 2))
