"""The report's summary: final numbers per algorithm with 95% intervals over seeds, and only what they support."""
from __future__ import annotations

import math
from html import escape
from itertools import combinations

from xrlhf.report.data import CompareData, eval_by_model, eval_mean, model_algorithm, tail_window
from xrlhf.report.sections import (ci_cell, eval_rewards, finals, fmt, n_steps, note, rose_fell, section,
                                   seed_win_rates, table)
from xrlhf.stats import A_HIGHER, B_HIGHER, CANNOT_TELL, difference_within_noise, mean_ci


def summary_section(data: CompareData) -> str:
    """Final reward, eval reward and win rate per algorithm with 95% intervals over seeds, and what is within noise."""
    if not data.all_runs():
        return section("summary", "Summary", note("No training metrics found yet: nothing to compare."))
    parts = [_setup(data), _final_table(data), "<ul>" + "".join(f"<li>{s}</li>" for s in _findings(data)) + "</ul>"]
    return section("summary", "Summary", "".join(parts))


def _setup(data: CompareData) -> str:
    runs = "; ".join(f"{escape(a)}: {len(data.runs.get(a, []))} seed(s)" for a in data.algorithms)
    text = (f"<p>{runs}; up to {n_steps(data)} steps. Final training values average the last "
            f"{tail_window(n_steps(data))} step(s) of each run. Intervals are 95% Student t over seeds "
            f"(a seed is one independent training run).</p>")
    if data.missing:
        text += note("Not found (sections that need them say so): " + ", ".join(data.missing))
    return text


def _final_table(data: CompareData) -> str:
    rows = []
    for a in data.algorithms:
        rows.append([escape(a), str(len(data.runs.get(a, []))),
                     ci_cell(mean_ci(finals(data, a, "reward/mean")), "final_reward", a),
                     ci_cell(mean_ci(eval_rewards(data, a)), "eval_reward", a),
                     ci_cell(mean_ci(seed_win_rates(data, a)), "win_rate", a)])
    base = [rows for rows in eval_by_model(data).values() if model_algorithm(rows) == "base"]
    if base:
        rows.append(["base", "—", "—", ci_cell((eval_mean(base[0]), math.nan, math.nan), "eval_reward", "base",
                                               over="models"), "—"])
    return table(["algorithm", "seeds", "final training reward", "eval reward", "win rate vs base"], rows,
                 cls="summary")


def _findings(data: CompareData) -> list[str]:
    out = []
    for a, b in combinations(data.algorithms, 2):
        for label, va, vb in (("final training reward", finals(data, a, "reward/mean"), finals(data, b, "reward/mean")),
                              ("eval reward", eval_rewards(data, a), eval_rewards(data, b))):
            out.append(_difference_sentence(label, a, b, va, vb))
        out.append(_dimension_differences(data, a, b))
        if seed_win_rates(data, a, b):
            out.append(_win_sentence(a, seed_win_rates(data, a, b), b))
    for a in data.algorithms:
        out.append(_win_sentence(a, seed_win_rates(data, a)))
        rose, fell = rose_fell(data, a)
        if rose and fell:
            out.append(f"{escape(a)}: {', '.join(map(escape, rose))} rose while {', '.join(map(escape, fell))} fell "
                       "during training (see Reward hacking).")
    return out


def _difference_sentence(label: str, a: str, b: str, va: list[float], vb: list[float]) -> str:
    d = difference_within_noise(va, vb)
    name = f"{escape(a)} − {escape(b)} {label}"
    if not math.isfinite(d.diff):
        return f"{name}: no data."
    if d.verdict == CANNOT_TELL:
        return f"{name}: {d.diff:+.3f}; cannot tell whether this is noise (needs at least 2 seeds on each side)."
    span = f"95% Welch interval [{d.lo:+.3f}, {d.hi:+.3f}]"
    if d.verdict in (A_HIGHER, B_HIGHER):
        winner = a if d.verdict == A_HIGHER else b
        return f"{name}: {d.diff:+.3f} ({span}): {escape(winner)} is higher beyond seed noise."
    return f"{name}: {d.diff:+.3f} ({span}): within noise."


def _dimension_differences(data: CompareData, a: str, b: str) -> str:
    """One line: per dimension, the eval score difference a − b over seeds and its verdict."""
    by_model = eval_by_model(data)

    def per_seed(algorithm: str, dim: str) -> list[float]:
        return [eval_mean(rows, dim) for rows in by_model.values() if model_algorithm(rows) == algorithm]

    parts = []
    for d in data.dimensions:
        diff = difference_within_noise(per_seed(a, d), per_seed(b, d))
        if math.isfinite(diff.diff):
            verdict = {A_HIGHER: f"{a} higher", B_HIGHER: f"{b} higher"}.get(diff.verdict, diff.verdict)
            parts.append(f"{escape(d)} {diff.diff:+.3f} ({escape(verdict)})")
    if not parts:
        return f"{escape(a)} − {escape(b)} eval score per dimension: no evaluation yet."
    return f"{escape(a)} − {escape(b)} eval score per dimension: " + "; ".join(parts) + "."


def _win_sentence(algorithm: str, rates: list[float], opponent: str = "base") -> str:
    """One line on the win rate over `opponent`, with its interval over seeds, or why there is none."""
    name = f"{escape(algorithm)} vs {escape(opponent)}"
    if not rates:
        return f"{name}: no pairwise judgements."
    mean, lo, hi = mean_ci(rates)
    if not math.isfinite(mean):
        return (f"{name}: cannot tell: the pairwise judge's verdicts followed the order the answers were shown in "
                "(see Win rates, position consistency).")
    if not math.isfinite(lo):
        return f"{name}: win rate {fmt(mean)} (single seed: no interval over seeds)."
    verdict = (f"preferred over {escape(opponent)}" if lo > 0.5 else f"{escape(opponent)} preferred" if hi < 0.5
               else f"not distinguishable from {escape(opponent)} (0.5 is a tie)")
    return f"{name}: win rate {fmt(mean)} [{fmt(lo)}, {fmt(hi)}]: {verdict}."
