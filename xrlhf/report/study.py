"""The study's planned analyses (issue 14), each answered with a 95% interval over seeds or an explicit "cannot tell":
held-out reward at equal samples and at equal wall time, the KL paid, stability, which dimensions moved, reward
hacking on held-out prompts. Reads what report.data loads; numbers per seed, intervals from xrlhf/stats.py.
"""
from __future__ import annotations

import math
import re
from html import escape
from itertools import combinations
from typing import Any

from xrlhf.report.data import (CompareData, Run, common_reach, early_late_delta, eval_by_model, model_algorithm,
                               val_curve)
from xrlhf.report.sections import ci_cell, finals, fmt, image, note, section, table
from xrlhf.report.summary import _difference_sentence
from xrlhf.stats import finite, interpolate_at, kl_spikes, mean_ci, step_noise


def verdict(ci: tuple[float, float, float], up: str = "rose", down: str = "fell") -> str:
    """What a 95% interval of a change says: up / down beyond seed noise, within noise, or cannot tell."""
    mean, lo, hi = ci
    if not math.isfinite(mean):
        return "cannot tell (no data)"
    if not math.isfinite(lo):
        return "cannot tell (one seed: no interval)"
    return up if lo > 0 else down if hi < 0 else "within noise"


def _cells(values: list[float], metric: str, arm: str, up: str = "rose", down: str = "fell") -> list[str]:
    ci = mean_ci(values)
    return [ci_cell(ci, metric, arm), escape(verdict(ci, up, down))]


def distinct_ngram_ratio(texts: list[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over a model's responses (1 = no repeats; a repetition loop → 0)."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


QUOTE_WORDS = 5  # a response repeating this many consecutive words of its prompt quotes it


def quoted_words(response: str, prompt: str) -> int:
    """The longest run of consecutive words (lower-cased letters, digits, apostrophes) the response repeats from its
    prompt. A likelihood judge finds the question's own text probable given the question, so quoting it is the
    cheap way up that judge's relevance; the copy guard only sees a response that is mostly the prompt."""
    a, b = re.findall(r"[a-z0-9']+", response.lower()), re.findall(r"[a-z0-9']+", prompt.lower())
    best, run = 0, [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, run[j] = run[j], (prev + 1 if x == y else 0)
            best = max(best, run[j])
    return best


def _quotes(row: dict[str, Any]) -> float:
    return float(quoted_words(str(row.get("response", "")), str(row.get("prompt", ""))) >= QUOTE_WORDS)


def versus_base(data: CompareData, arm: str, value: Any) -> list[float]:
    """Per seed of `arm`: mean over the eval prompts of value(row) − value(base row of the same prompt)."""
    by_model = eval_by_model(data)
    base = {r.get("prompt_id"): r for rows in by_model.values() if model_algorithm(rows) == "base" for r in rows}
    out = []
    for rows in by_model.values():
        if model_algorithm(rows) != arm:
            continue
        diffs = finite([_sub(value(r), value(base[r.get("prompt_id")])) for r in rows if r.get("prompt_id") in base])
        out.append(sum(diffs) / len(diffs) if diffs else math.nan)
    return out


def _sub(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _mean_conf(row: dict[str, Any]) -> float | None:
    xs = finite(list((row.get("confidence") or {}).values()))
    return sum(xs) / len(xs) if xs else None


def study_section(data: CompareData, images: dict[str, str | None]) -> str:
    """The study's questions in the order it planned them."""
    body = image(images.get("validation"), "held-out validation curves",
                 "No validation curve: the runs were trained with eval.every_steps = 0.")
    body += ("<p>Held-out validation: the same prompts for every arm and seed, answered greedily by the policy "
             "before training (x = 0) and every eval.every_steps steps, scored by the training judge. Line: mean "
             "over seeds; band: 95% t interval over seeds; between validations the curves are interpolated linearly."
             "</p>")
    parts = [_equal_budget(data, "samples", "equal samples"), _equal_budget(data, "wall_s", "equal wall time"),
             _eval_vs_base(data), _kl_paid(data), _stability(data), _specialisation(data), _hacking(data)]
    return section("study", "Study questions", body + "".join(parts))


def _equal_budget(data: CompareData, axis: str, title: str) -> str:
    runs = data.all_runs()
    x = common_reach(runs, axis)
    head = f"<h3>Which arm reaches the higher held-out reward at {escape(title)}?</h3>"
    if not math.isfinite(x):
        return head + note("Cannot tell: some run has no validation curve (eval.every_steps = 0 or still training).")
    unit = "samples" if axis == "samples" else "s of training"
    rows, per_arm = [], {}
    for a in data.algorithms:
        at = [interpolate_at(*val_curve(r, axis), x) for r in data.runs.get(a, [])]
        start = [interpolate_at(*val_curve(r, axis), 0.0) for r in data.runs.get(a, [])]
        per_arm[a] = at
        rows.append([escape(a), ci_cell(mean_ci(at), f"val_at_{axis}", a)]
                    + _cells([v - s for v, s in zip(at, start)], f"val_gain_at_{axis}", a, "above the start",
                             "below the start"))
    body = head + f"<p>At {fmt(x, 0 if axis == 'samples' else 1)} {unit}, the furthest every run reached:</p>"
    body += table(["arm", "held-out reward", "gain over the policy before training", "verdict"], rows)
    lines = [_difference_sentence(f"held-out reward at {title}", a, b, per_arm[a], per_arm[b])
             for a, b in combinations(data.algorithms, 2)]
    return body + "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def _eval_vs_base(data: CompareData) -> str:
    head = "<h3>Final policies against the base model (held-out evaluation, evaluation judge)</h3>"
    if not data.eval_rows:
        return head + note("Cannot tell: no evaluation yet (eval/eval.jsonl).")
    rows = [[escape(a)] + _cells(versus_base(data, a, lambda r: r.get("reward")), "eval_gain", a, "above base",
                                 "below base") for a in data.algorithms]
    return head + ("<p>Per seed: mean over the eval prompts of (tuned − base) reward on the same prompt.</p>"
                   + table(["arm", "eval reward − base", "verdict"], rows))


def _kl_paid(data: CompareData) -> str:
    rows = [[escape(a), ci_cell(mean_ci(finals(data, a, "kl/mean")), "final_kl", a),
             ci_cell(mean_ci(finals(data, a, "reward/mean")), "final_reward", a)] for a in data.algorithms]
    lines = [_difference_sentence("final KL", a, b, finals(data, a, "kl/mean"), finals(data, b, "kl/mean"))
             for a, b in combinations(data.algorithms, 2)]
    return ("<h3>The KL each paid</h3><p>KL to the reference summed over the response (the estimator the run used), "
            "mean of the last tenth of steps:</p>" + table(["arm", "final KL", "final training reward"], rows)
            + "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>")


def _stability(data: CompareData) -> str:
    rows = []
    for a in data.algorithms:
        runs = data.runs.get(a, [])
        noise = [step_noise(r.series("reward/mean")) for r in runs]
        spikes = [float(len(kl_spikes(r.series("kl/mean")))) for r in runs]
        ends = finite([_last_val(r) for r in runs])
        spread = (f"{fmt(_std(ends))} over {len(ends)} seeds (descriptive: cannot tell whether arms differ)"
                  if len(ends) > 1 else "cannot tell (fewer than two seeds)")
        rows.append([escape(a), ci_cell(mean_ci(noise), "reward_step_noise", a),
                     ci_cell(mean_ci(finals(data, a, "reward/std")), "reward_std_within_batch", a),
                     ci_cell(mean_ci(spikes), "kl_spikes", a), escape(spread)])
    lines = [_difference_sentence("step-to-step reward noise", a, b,
                                  [step_noise(r.series("reward/mean")) for r in data.runs.get(a, [])],
                                  [step_noise(r.series("reward/mean")) for r in data.runs.get(b, [])])
             for a, b in combinations(data.algorithms, 2)]
    return ("<h3>Stability</h3><p>Within a seed: the step-to-step noise of the batch reward (std of successive "
            "differences / √2, which a steady trend barely moves), the within-batch reward std and the number of KL "
            "spikes (KL &gt; median + 3·MAD). Across seeds: the spread of the final held-out reward.</p>"
            + table(["arm", "reward noise per step", "reward std within batch", "KL spikes per run",
                     "across-seed spread of final held-out reward"], rows)
            + "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>")


def _last_val(run: Run) -> float:
    ys = val_curve(run, "step")[1]
    return ys[-1] if ys else math.nan


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _specialisation(data: CompareData) -> str:
    head = "<h3>Which dimensions moved (specialisation)</h3>"
    if not data.eval_rows:
        return head + note("Cannot tell: no evaluation yet.")
    rows = []
    for a in data.algorithms:
        for d in data.dimensions:
            delta = versus_base(data, a, lambda r, d=d: (r.get("normalised") or {}).get(d))
            rows.append([escape(a), escape(d)] + _cells(delta, f"eval_delta/{d}", a)
                        + [ci_cell(mean_ci(finals(data, a, f"attribution/{d}")), f"attribution/{d}", a)])
    return head + ("<p>Per dimension: held-out normalised score of the tuned policy minus base on the same prompt "
                   "(evaluation judge), and the share of the training advantage the dimension carried at the end "
                   "(training judge; see Reward attribution).</p>"
                   + table(["arm", "dimension", "Δ vs base (held-out)", "verdict", "share of advantage"], rows))


def _hacking(data: CompareData) -> str:
    rows = []
    for a in data.algorithms:
        runs = data.runs.get(a, [])
        held = [versus_base(data, a, lambda r: r.get("length")), _distinct_vs_base(data, a),
                versus_base(data, a, _quotes), versus_base(data, a, _mean_conf)]
        train = [[early_late_delta(r, k) for r in runs] for k in ("entropy/mean", "confidence/mean")]
        rows.append([escape(a)] + [c for values, m in zip(held + train, ("length", "distinct2", "quoting",
                                                                          "confidence", "entropy_drift",
                                                                          "confidence_drift"))
                                   for c in _cells(values, f"hacking/{m}", a)])
    return ("<h3>Reward hacking</h3><p>Held-out, tuned − base on the same prompts: response length (tokens), "
            "distinct word-bigram ratio (repetition lowers it), the share of answers that quote their prompt "
            f"(repeat {QUOTE_WORDS} or more of its words in a row: the question's own text is what a likelihood "
            "judge finds probable; some tasks quote legitimately, so read it against base) and mean judge "
            "confidence. During training, last quarter − first quarter of steps: policy entropy (a collapse shows "
            "as a fall) and judge confidence (drift).</p>"
            + table(["arm", "Δ length", "", "Δ distinct-2", "", "Δ quoting", "", "Δ confidence", "",
                     "entropy drift", "", "confidence drift", ""], rows))


def _distinct_vs_base(data: CompareData, arm: str) -> list[float]:
    by_model = eval_by_model(data)
    base = [distinct_ngram_ratio([str(r.get("response", "")) for r in rows])
            for rows in by_model.values() if model_algorithm(rows) == "base"]
    return [distinct_ngram_ratio([str(r.get("response", "")) for r in rows]) - base[0]
            for rows in by_model.values() if model_algorithm(rows) == arm and base]
