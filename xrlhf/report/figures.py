"""The report's figures as PNG bytes; each returns None when the compare directory has nothing to draw."""
from __future__ import annotations

import io
import math
import random
import warnings

import numpy as np
from matplotlib.figure import Figure

from xrlhf.report.data import (VAL_AXES, CompareData, aligned, common_reach, eval_by_model, eval_mean, model_algorithm,
                               val_curve)
from xrlhf.stats import interpolate_at, mean_ci, smooth

STAGES = ("rollout", "reference", "judge", "learner", "sync")
MAX_SCATTER_POINTS = 2000
CURVE_PANELS = (("reward/mean", "reward (mean)"), ("kl/mean", "KL to reference"),
                ("reward/std", "reward std within batch"), ("grad_norm", "grad norm"))


def colour(name: str, algorithms: list[str]) -> str:
    """Fixed colour per algorithm so every figure agrees; base is grey."""
    if name not in algorithms:
        return "0.55"
    return f"C{algorithms.index(name) % 10}"


def smooth_window(n_steps: int) -> int:
    """Curves average over a twentieth of the run so per-batch noise does not hide the trend."""
    return max(1, n_steps // 20)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _band(ax, data: CompareData, algorithm: str, key: str) -> bool:
    """Mean over seeds (smoothed) with the min–max range over seeds as a band; False when the key has no data."""
    runs = [r for r in data.runs.get(algorithm, []) if r.has(key)]
    if not runs:
        return False
    steps, rows = aligned(runs, key)
    m = np.array(rows, dtype=float)  # [seeds, steps]
    window = smooth_window(len(steps))
    mean, lo, hi = (smooth(_over_seeds(f, m), window) for f in (np.nanmean, np.nanmin, np.nanmax))
    c = colour(algorithm, data.algorithms)
    ax.plot(steps, mean, color=c, label=f"{algorithm} ({len(runs)} seed{'s' * (len(runs) > 1)})")
    if len(runs) > 1:
        ax.fill_between(steps, lo, hi, color=c, alpha=0.2, linewidth=0)
    return True


def _over_seeds(reduce, m: np.ndarray) -> list[float]:
    """Column-wise nan-aware reduction; a step where no seed has a value stays nan without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return list(reduce(m, axis=0))


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _panel_grid(n: int, ncols: int, height: float = 3.0) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, height * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def _curve_panels(data: CompareData, panels: list[tuple[str, str]], ncols: int) -> bytes | None:
    fig, axes = _panel_grid(len(panels), ncols)
    drew = False
    for ax, (key, title) in zip(axes, panels):
        shown = [_band(ax, data, a, key) for a in data.algorithms]
        drew |= any(shown)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if any(shown):
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
    return _png(fig) if drew else None


def curves_figure(data: CompareData) -> bytes | None:
    """Reward, KL, reward std and grad norm over steps: mean over seeds, band = range over seeds."""
    return _curve_panels(data, list(CURVE_PANELS), ncols=2)


def dimension_curves_figure(data: CompareData) -> bytes | None:
    """Mean normalised score of each judge dimension over steps, per algorithm."""
    if not data.dimensions:
        return None
    return _curve_panels(data, [(f"score/{d}", d) for d in data.dimensions], ncols=3)


def attribution_figure(data: CompareData) -> bytes | None:
    """Per algorithm, each dimension's signed share of the advantage over steps (mean over seeds)."""
    if not data.dimensions or not data.algorithms:
        return None
    fig, axes = _panel_grid(len(data.algorithms), ncols=2, height=3.4)
    drew = False
    for ax, algorithm in zip(axes, data.algorithms):
        runs = data.runs.get(algorithm, [])
        for i, dim in enumerate(data.dimensions):
            key = f"attribution/{dim}"
            if not any(r.has(key) for r in runs):
                continue
            steps, rows = aligned(runs, key)
            mean = _over_seeds(np.nanmean, np.array(rows, dtype=float))
            ax.plot(steps, smooth(mean, smooth_window(len(steps))), color=f"C{i % 10}", label=dim)
        if ax.lines:
            drew = True
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_title(f"{algorithm}: share of advantage", fontsize=10)
        ax.set_xlabel("step")
    return _png(fig) if drew else None


def eval_bars_figure(data: CompareData) -> bytes | None:
    """Final eval mean normalised score per dimension: base and each algorithm side by side, error bar = 95% CI over seeds."""
    by_model = eval_by_model(data)
    if not by_model or not data.dimensions:
        return None
    groups = ["base"] + data.algorithms
    fig = Figure(figsize=(max(6.0, 1.6 * len(data.dimensions)), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(groups)
    x = np.arange(len(data.dimensions))
    for g, group in enumerate(groups):
        models = [rows for rows in by_model.values() if model_algorithm(rows) == group]
        if not models:
            continue
        cis = [mean_ci([eval_mean(rows, d) for rows in models]) for d in data.dimensions]
        heights = [c[0] for c in cis]
        err = None
        if len(models) > 1:
            err = np.array([[c[0] - c[1] for c in cis], [c[2] - c[0] for c in cis]])
        ax.bar(x + (g - (len(groups) - 1) / 2) * width, heights, width, yerr=err, capsize=3,
               color=colour(group, data.algorithms), label=f"{group} ({len(models)} model{'s' * (len(models) > 1)})")
    ax.set_xticks(x, data.dimensions)
    ax.set_ylabel("mean normalised score")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=len(groups), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _png(fig)


def hacking_figure(data: CompareData) -> bytes | None:
    """Length vs reward per sample, judge confidence over steps, and the batch length–reward correlation over steps."""
    if not data.all_runs():
        return None
    fig, axes = _panel_grid(3, ncols=3, height=3.2)
    rng = random.Random(0)  # a fixed subsample keeps rebuilt reports identical
    for algorithm in data.algorithms:
        points = [(s.get("length"), s.get("reward")) for r in data.runs.get(algorithm, []) for s in r.samples]
        points = [(x, y) for x, y in points if isinstance(x, (int, float)) and isinstance(y, (int, float))]
        if len(points) > MAX_SCATTER_POINTS:
            points = rng.sample(points, MAX_SCATTER_POINTS)
        if points:
            xs, ys = zip(*points)
            axes[0].scatter(xs, ys, s=6, alpha=0.4, color=colour(algorithm, data.algorithms), label=algorithm)
    axes[0].set(title="response length vs reward (training samples)", xlabel="tokens", ylabel="reward")
    if axes[0].collections:
        axes[0].legend(fontsize=8)
    else:
        _no_data(axes[0])
    for ax, (key, title) in zip(axes[1:], (("confidence/mean", "judge confidence"),
                                           ("corr/length_reward", "corr(length, reward) per batch"))):
        if any([_band(ax, data, a, key) for a in data.algorithms]):
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
        ax.set(title=title, xlabel="step")
    for ax in axes:
        ax.title.set_fontsize(10)
    return _png(fig)


def stage_seconds(data: CompareData, algorithm: str) -> dict[str, float]:
    """Mean seconds per step in each stage over all seeds; "other" is the step time the stages do not cover."""
    runs = data.runs.get(algorithm, [])
    out = {}
    for stage in (*STAGES, "step"):
        xs = [v for r in runs for v in r.series(f"time/{stage}") if math.isfinite(v)]
        out[stage] = sum(xs) / len(xs) if xs else math.nan
    covered = sum(v for k, v in out.items() if k != "step" and math.isfinite(v))
    out["other"] = max(0.0, out.pop("step") - covered) if math.isfinite(out["step"]) else math.nan
    return out


def timing_figure(data: CompareData) -> bytes | None:
    """Stacked bar of mean seconds per stage per step, one bar per algorithm."""
    table = {a: stage_seconds(data, a) for a in data.algorithms}
    if not any(math.isfinite(v) for t in table.values() for v in t.values()):
        return None
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(data.algorithms))
    for i, stage in enumerate((*STAGES, "other")):
        heights = np.array([table[a][stage] for a in data.algorithms], dtype=float)
        heights = np.nan_to_num(heights)
        ax.bar(data.algorithms, heights, bottom=bottom, label=stage, color=f"C{i % 10}")
        bottom += heights
    ax.set_ylabel("seconds per step")
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _png(fig)


def val_grid(runs: list, axis: str) -> list[float]:
    """x values where an arm's seeds are averaged: their validation points up to the x all of them reach (on the
    wall-seconds axis, where each run has its own times, 25 even steps up to it)."""
    reach = common_reach(runs, axis)
    if not math.isfinite(reach):
        return []
    if axis == "wall_s":
        return list(np.linspace(0.0, reach, 25))
    return sorted({x for r in runs for x in val_curve(r, axis)[0] if x <= reach})


def val_band(runs: list, axis: str, key: str = "reward") -> tuple[list[float], list[tuple[float, float, float]]]:
    """(grid, per grid x the mean over seeds with its 95% t interval) of the linearly interpolated curves."""
    grid = val_grid(runs, axis)
    return grid, [mean_ci([interpolate_at(*val_curve(r, axis, key), x) for r in runs]) for x in grid]


def validation_figure(data: CompareData) -> bytes | None:
    """Held-out judged reward of each arm against updates, samples, judge calls and wall seconds: mean over seeds,
    band = 95% t interval over seeds (points between validations are linear interpolations)."""
    if not any(val_curve(r)[0] for r in data.all_runs()):
        return None
    fig, axes = _panel_grid(len(VAL_AXES), ncols=2, height=3.2)
    for ax, (axis, label) in zip(axes, VAL_AXES.items()):
        for a in data.algorithms:
            runs = [r for r in data.runs.get(a, []) if val_curve(r, axis)[0]]
            grid, cis = val_band(runs, axis) if runs else ([], [])
            if not grid:
                continue
            c = colour(a, data.algorithms)
            mean, lo, hi = (np.array([ci[i] for ci in cis], dtype=float) for i in range(3))
            ax.plot(grid, mean, color=c, marker="o" if axis != "wall_s" else None, markersize=3,
                    label=f"{a} ({len(runs)} seed{'s' * (len(runs) > 1)})")
            if np.isfinite(lo).any():
                ax.fill_between(grid, lo, hi, color=c, alpha=0.2, linewidth=0)
        ax.set(title=f"held-out reward vs {label}", xlabel=label)
        ax.title.set_fontsize(10)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
    return _png(fig)
