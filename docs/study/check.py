"""Recompute every number docs/STUDY.md states about the committed study run; exit 1 naming each that does not hold.

    python docs/study/check.py [--study PATH]

The run is the second study's: the files directly under docs/study/ (compare.json, */config.yaml, */metrics.jsonl,
*/samples.jsonl, eval/), not first-run/, pilot/ or aborted-lr5e-4/. A claim is a piece of STUDY.md's text with {}
where each number stands, and the values recomputed here for those numbers, in order. A number holds when it is
within the claim's tolerance of its value: by default half a unit in the last digit it is written with. A claim whose
text STUDY.md no longer contains fails too, so a reworded sentence needs its claim reworded here. What the files
cannot give is listed in NOT_RECOMPUTED.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from statistics import mean, median, stdev
from typing import Any, Callable

import yaml

from xrlhf.data import load_prompts
from xrlhf.report.data import (CompareData, Run, common_reach, early_late_delta, eval_by_model, load_compare,
                               model_algorithm, pairings, val_curve)
from xrlhf.report.figures import stage_seconds
from xrlhf.report.sections import eval_rewards, finals, seed_win_rates
from xrlhf.report.study import QUOTE_WORDS, distinct_ngram_ratio, quoted_words, versus_base
from xrlhf.stats import (bootstrap_mean_ci, difference_within_noise, holm, interpolate_at, kl_spikes, linear_trend,
                         mean_ci, step_noise, t_critical, t_p_value)

HERE = Path(__file__).resolve().parent
ARMS = ("ppo", "reinforce_ema", "rloo")
NUM = r"([+\-−]?\d[\d,]*(?:\.\d+)?)"
NOT_RECOMPUTED = [
    "the pilot2's first evaluation without stops (-0.007): its files were replaced by the evaluation with stops",
    "79 min 1 s wall, 3.0 GB peak, runs of 445-636 s, evaluation and report 175 s, ~25 minutes beside benchmarks: "
    "/usr/bin/time and the driver's log, not committed",
    "the sizing steps 1-2 and the 31-46 s step of 16 samples: the first run, the pilot and measurements before the run",
    "the judge's quality figures (0.535, 0.926, 0.818, 98.5%, 0.82, 66 x 9) and the speed-ups (1.26x, 1.22x, 1.30x, "
    "1.40x, ~80 minutes): bench/judge_quality.py and BENCHMARKS.md",
    "the first run's table and the pilot's +0.075, 0.226, 5.4 nats: earlier runs",
    "the second run's evaluation time (390 s) and the command's 2 h 10 min: the driver's log",
    "'three arms, Holm's first step at α/3' would not pass at p 0.048: arithmetic on the p above",
]


@dataclass
class Claim:
    id: str
    text: str  # STUDY.md's words, {} for each number
    values: list[float]
    tol: float | None = None  # None: half a unit in the last written digit
    at_most: bool = False  # "within 0.006": the value may not exceed the written number


def claim(cid: str, text: str, *values: Any, tol: float | None = None, at_most: bool = False) -> Claim:
    flat = [float(x) for v in values for x in (v if isinstance(v, (tuple, list)) else [v])]
    return Claim(cid, text, flat, tol, at_most)


def _number(written: str) -> tuple[float, float]:
    """(value, half a unit in its last digit) of a number as STUDY.md writes it: −0.052, +0.014, 1,728."""
    clean = written.replace("−", "-").replace(",", "")
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    return float(clean), 0.5 * 10 ** -decimals


def check(study_text: str, claims: list[Claim]) -> tuple[list[tuple[str, str, float, str, bool]], list[str]]:
    """(rows: id, written, recomputed, tolerance, holds; failures: each claim that does not hold, and why)."""
    text = re.sub(r"\s+", " ", study_text)
    rows, failures = [], []
    for c in claims:
        parts = re.sub(r"\s+", " ", c.text).split("{}")
        found = re.search(NUM.join(re.escape(p) for p in parts), text)
        if found is None:
            failures.append(f"{c.id}: text not found in STUDY.md: {c.text!r}")
            continue
        if len(found.groups()) != len(c.values):
            failures.append(f"{c.id}: {len(found.groups())} numbers written, {len(c.values)} recomputed")
            continue
        for i, (written, value) in enumerate(zip(found.groups(), c.values)):
            number, half = _number(written)
            tol = c.tol if c.tol is not None else half + 1e-9
            ok = math.isfinite(value) and (value <= number if c.at_most else abs(number - value) <= tol)
            tol_text = "at most" if c.at_most else f"±{tol:.2g}"
            rows.append((f"{c.id}[{i}]" if len(c.values) > 1 else c.id, written, value, tol_text, ok))
            if not ok:
                failures.append(f"{c.id}: STUDY.md {written}, recomputed {value:.6g} ({tol_text})")
    return rows, failures


# ---- what the run's files say ---------------------------------------------------------------------------------


def per_seed(data: CompareData, arm: str, fn: Callable[[Run], float]) -> list[float]:
    return [fn(r) for r in data.runs[arm]]


def last_quarter(run: Run, key: str) -> float:
    values = run.series(key)
    return mean(values[-max(1, len(values) // 4):])


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    d = difference_within_noise(a, b)
    return d.diff, d.lo, d.hi


def quotes(threshold: int) -> Callable[[dict], float]:
    return lambda row: float(quoted_words(str(row["response"]), str(row["prompt"])) >= threshold)


def per_prompt_vs_base(data: CompareData, arm: str, value: Callable[[dict], float]) -> list[float]:
    """Per eval prompt: value(tuned) − value(base) on that prompt, averaged over the arm's seeds."""
    by_model = eval_by_model(data)
    base = {r["prompt_id"]: r for rows in by_model.values() if model_algorithm(rows) == "base" for r in rows}
    diffs: dict[Any, list[float]] = {}
    for rows in by_model.values():
        if model_algorithm(rows) == arm:
            for r in rows:
                diffs.setdefault(r["prompt_id"], []).append(value(r) - value(base[r["prompt_id"]]))
    return [mean(v) for v in diffs.values()]


def seed_order_baselines(returns: list[float], start_at_mean: bool) -> list[float]:
    """The EMA baseline (decay 0.99) each batch would see in the seed's order: update with the batch, then subtract."""
    out, value = [], None
    for m in returns:
        value = (m if start_at_mean else 0.01 * m) if value is None else 0.99 * value + 0.01 * m
        out.append(value)
    return out


def seeds_for_power(sd: float, gain: float, alpha: float, power: float = 0.8) -> int:
    """Least n with (t(1 − α/2, n − 1) + t(power, n − 1))·sd/√n ≤ gain."""
    return next(n for n in range(2, 1000)
                if (t_critical(1 - alpha, n - 1) + t_critical(2 * power - 1, n - 1)) * sd / math.sqrt(n) <= gain)


def gain_variance_split(data: CompareData) -> tuple[list[float], float, float]:
    """(per-arm seed SD of eval − base, pooled residual mean square of the seeds × prompts table, pooled variance)."""
    sds, residual_ms = [], []
    for arm in ARMS:
        table = {}
        by_model = eval_by_model(data)
        base = {r["prompt_id"]: r["reward"] for rows in by_model.values() if model_algorithm(rows) == "base"
                for r in rows}
        for model, rows in by_model.items():
            if model_algorithm(rows) == arm:
                table[model] = {r["prompt_id"]: r["reward"] - base[r["prompt_id"]] for r in rows}
        prompts = sorted(next(iter(table.values())))
        cells = [[row[p] for p in prompts] for row in table.values()]  # [seeds, prompts]
        seed_means = [mean(row) for row in cells]
        prompt_means = [mean(col) for col in zip(*cells)]
        grand = mean(seed_means)
        # residual of a two-way table without replication: x_sp − x̄_s − x̄_p + x̄
        sse = sum((x - seed_means[i] - prompt_means[j] + grand) ** 2 for i, row in enumerate(cells)
                  for j, x in enumerate(row))
        residual_ms.append(sse / ((len(cells) - 1) * (len(prompts) - 1)))
        sds.append(stdev(seed_means))
    return sds, mean(residual_ms), mean(sd ** 2 for sd in sds)


# ---- the claims, in STUDY.md's order ---------------------------------------------------------------------------


def setup_claims(data: CompareData) -> list[Claim]:
    cfgs = [yaml.safe_load((data.path / r.name / "config.yaml").read_text()) for r in data.all_runs()]
    cfg = cfgs[0]
    shared = ("lr", "kl_coef", "kl_estimator", "ppo")
    if any(c["rollout"] != cfg["rollout"] or c["steps"] != cfg["steps"] or c["model"] != cfg["model"]
           or any(c["algorithm"][k] != cfg["algorithm"][k] for k in shared) for c in cfgs):
        raise SystemExit("the runs' configs differ beyond their arm, seed and name: not one study")
    alg, ppo, roll = cfg["algorithm"], cfg["algorithm"]["ppo"], cfg["rollout"]
    train = load_prompts(cfg["data"]["source"], "train", max_prompt_tokens=cfg["data"]["max_prompt_tokens"])
    models = eval_by_model(data)
    n_eval = {len(rows) for rows in models.values()}
    # per seed, the prompt sets its runs trained on: one set per seed means every arm saw the same prompts
    prompt_sets = [{frozenset(x["prompt"] for x in r.samples) for r in data.all_runs() if r.seed == s}
                   for s in data.meta["seeds"]]
    same_prompts = {len(next(iter(v))) for v in prompt_sets} if all(len(v) == 1 for v in prompt_sets) else {math.nan}
    val_steps = sorted({row["step"] + 1 for r in data.all_runs() for row in r.metrics if "val/reward" in row})
    per_batch = roll["prompts_per_step"] * roll["samples_per_prompt"]
    return [
        claim("setup.lora", "fp32, LoRA r={} (alpha {}) on q/k/v/o", cfg["model"]["lora"]["r"],
              cfg["model"]["lora"]["alpha"]),
        claim("setup.prompts", "the bundled set: {} training prompts, the held-out split for validation ({}) and "
              "evaluation ({})", len(train.prompts), data.meta["validation"]["prompts"], *n_eval),
        claim("setup.budget", "{} steps × {} prompts × {} samples × {} new tokens = {} samples; lr {}e-4; KL "
              "coefficient {} (k1)", cfg["steps"], roll["prompts_per_step"], roll["samples_per_prompt"],
              roll["max_new_tokens"], cfg["steps"] * per_batch, alg["lr"] * 1e4, alg["kl_coef"]),
        claim("setup.ppo", "GAE (γ {}, λ {}), clip {}, value clip {}, {} epoch in two minibatches of {}",
              ppo["gamma"], ppo["lam"], ppo["clip_range"], ppo["value_clip_range"], ppo["epochs"],
              ppo["minibatch_size"]),
        claim("setup.reinforce", "sequence return (judge reward − {} · ΣKL)", alg["kl_coef"]),
        claim("setup.seeds", "{}, {}, {} for every arm ({} runs); each seed sees the same {} prompts in every arm",
              *data.meta["seeds"], len(data.all_runs()), *same_prompts),
        claim("setup.validation", "greedy answers to {} held-out prompts before step 1 and after steps {}, {}, {}",
              data.meta["validation"]["prompts"], *val_steps),
        claim("setup.evaluation", "the base model and the {} final policies to {} held-out prompts",
              len(models) - 1, *n_eval),
    ]


def ema_claims(data: CompareData) -> list[Claim]:
    """The EMA baseline's order: what the seed's order (update, then subtract) would have given on the same returns."""
    total, cap, short, _ = training_lengths(data)
    eval_cap = cap if all(r["length"] == cap for r in data.eval_rows) else math.nan
    ema = data.runs["reinforce_ema"]
    positive_first, later, plain_share, plain_first, plain_last = [], [], [], [], []
    for run in ema:
        returns, ran = run.series("reinforce/return"), run.series("reinforce/baseline")
        flag, plain = seed_order_baselines(returns, True), seed_order_baselines(returns, False)
        # a sample's return is its advantage plus the baseline that ran (REINFORCE here does not whiten)
        positive_first.append(sum(1 for s in run.samples if s["step"] == 0 and s["advantage"] + ran[0] - flag[0] > 0))
        later.append(max(abs(a - b) for a, b in zip(flag[1:], ran[1:])))
        plain_share.append(100 * mean(s["advantage"] + ran[s["step"]] - plain[s["step"]] > 0 for s in run.samples))
        plain_first.append(plain[0])
        plain_last.append(plain[-1])
    batch = {sum(1 for s in r.samples if s["step"] == 0) for r in ema}
    return [
        claim("lengths.cap", "every evaluation answer in this study is cut at {} tokens, as are {} of the {} "
              "training samples", eval_cap, total - len(short), total),
        claim("ema_order.first_batch", "the first batch's baseline is its own mean ({}, {} and {} of its {} advantages "
              "positive instead of all {})", *positive_first, *batch, *batch),
        claim("ema_order.later", "every later baseline is within {} of the one that ran", max(later), at_most=True),
        claim("ema_order.plain", "the baseline would be {}–{} for the first batch and {}–{} at the last, leaving "
              "{}–{}% of the advantages positive", min(plain_first), max(plain_first), min(plain_last), max(plain_last),
              min(plain_share), max(plain_share)),
    ]


def mean_conf(row: dict) -> float:
    xs = [v for v in (row.get("confidence") or {}).values() if isinstance(v, (int, float))]
    return mean(xs)


def eval_row(data: CompareData, model: str, text: str) -> dict:
    return next(r for r in eval_by_model(data)[model] if text in r["prompt"])


def results_claims(data: CompareData) -> list[Claim]:
    runs = data.all_runs()
    steps = [x for r in runs for x in r.metrics]
    medians = [median(r.series("time/step")) for r in runs]
    reinforce = [x for a in ("reinforce_ema", "rloo") for r in data.runs[a] for x in r.metrics]
    out = [claim("timing.steps", "median step {}–{} s: rollout {} s, judge ∥ reference {} s, learner {} s REINFORCE "
                 "and {} s PPO", min(medians), max(medians), mean(x["time/rollout"] for x in steps),
                 mean(max(x["time/judge"], x["time/reference"]) for x in steps),
                 mean(x["time/learner"] for x in reinforce), stage_seconds(data, "ppo")["learner"])]
    reach = common_reach(runs, "samples")
    at = {a: [interpolate_at(*val_curve(r, "samples"), reach) for r in data.runs[a]] for a in ARMS}
    start = {a: [interpolate_at(*val_curve(r, "samples"), 0.0) for r in data.runs[a]] for a in ARMS}
    gain = {a: [x - s for x, s in zip(at[a], start[a])] for a in ARMS}
    eval_gain = {a: versus_base(data, a, lambda r: r.get("reward")) for a in ARMS}
    labels = {"ppo": "PPO", "reinforce_ema": "REINFORCE, EMA baseline (0.99, from 0)", "rloo": "RLOO"}
    out.append(claim("table.header", "| arm | held-out reward at {} samples (validation, 8 prompts)", reach))
    for a in ARMS:
        out.append(claim(f"table.{a}", f"| {labels[a]} |" + " {} [{}, {}] |" * 6, mean_ci(at[a]), mean_ci(gain[a]),
                         mean_ci(eval_rewards(data, a)), mean_ci(eval_gain[a]), mean_ci(seed_win_rates(data, a)),
                         mean_ci(finals(data, a, "kl/mean"))))
    base_eval = [mean(r["reward"] for r in rows) for rows in eval_by_model(data).values()
                 if model_algorithm(rows) == "base"]
    out.append(claim("table.base", "| base | {} | — | {} |", *{s for v in start.values() for s in v}, *base_eval))
    wall = common_reach(runs, "wall_s")
    at_wall = {a: [interpolate_at(*val_curve(r, "wall_s"), wall) for r in data.runs[a]] for a in ARMS}
    pairs = list(combinations(ARMS, 2))
    out += [claim("equal_samples", "(192 each): PPO − REINFORCE-EMA {} [{}, {}], PPO − RLOO {} [{}, {}], EMA − RLOO "
                  "{} [{}, {}]", *[welch(at[a], at[b]) for a, b in pairs]),
            claim("equal_wall", "({} s of training, the furthest every run reached): PPO − EMA {} [{}, {}], PPO − "
                  "RLOO {} [{}, {}], EMA − RLOO {} [{}, {}]", wall, *[welch(at_wall[a], at_wall[b]) for a, b in pairs])]
    base_val = start["rloo"][0]
    val_points = [val_curve(r, "step") for r in data.runs["rloo"]]
    dips = [x for i, x in enumerate(val_points[0][0][1:-1], 1) if all(ys[i] < base_val for _, ys in val_points)]
    out += [claim("rloo_vs_base", "({}, {}, {} against {}), a gain of {} [{}, {}], after dipping below it at steps {} "
                  "and {} in every seed; on the {} evaluation prompts {} [{}, {}]", at["rloo"], base_val,
                  mean_ci(gain["rloo"]), dips, len(eval_by_model(data)["base"]),
                  mean_ci(eval_gain["rloo"])),
            claim("ppo_vs_arms", "win rate {} [{}, {}] against EMA, {} [{}, {}] against RLOO",
                  mean_ci(seed_win_rates(data, "ppo", "reinforce_ema")), mean_ci(seed_win_rates(data, "ppo", "rloo")))]
    consistency = {p.consistency for p in pairings(data)}
    out.append(claim("consistency", "Position consistency is {} for every pairing",
                     consistency.pop() if len(consistency) == 1 else math.nan))
    total, cap, short, by_arm = training_lengths(data)
    at_cap = sum(1 for r in data.eval_rows if r["length"] == cap)
    out += [claim("lengths.eval", "every evaluation response used all {} tokens ({} of {})", cap, at_cap,
                  len(data.eval_rows)),
            claim("lengths.train", "in training {} of the {} samples ended before the cap, at {} to {} tokens (PPO {}, "
                  "EMA {}, RLOO {})", len(short), total, min(short), max(short), *by_arm.values())]
    return out


def training_lengths(data: CompareData) -> tuple[int, int, list[int], dict[str, int]]:
    """(training samples, the token cap, lengths of those below it, how many of them per arm)."""
    cap = yaml.safe_load((data.path / data.all_runs()[0].name / "config.yaml").read_text())["rollout"]["max_new_tokens"]
    samples = [(r.algorithm, s["length"]) for r in data.all_runs() for s in r.samples]
    short = [(a, n) for a, n in samples if n < cap]
    return len(samples), cap, [n for _, n in short], {a: sum(1 for b, _ in short if b == a) for a in ARMS}


def kl_stability_claims(data: CompareData) -> list[Claim]:
    n = len(data.runs["ppo"][0].metrics)
    q = max(1, n // 4)
    kl_end = {a: finals(data, a, "kl/mean") for a in ARMS}
    kl_q = {a: per_seed(data, a, lambda r: last_quarter(r, "kl/mean")) for a in ARMS}
    noise = {a: per_seed(data, a, lambda r: step_noise(r.series("reward/mean"))) for a in ARMS}
    spread = {a: per_seed(data, a, lambda r: stdev(r.series("reward/mean"))) for a in ARMS}
    resid = {a: per_seed(data, a, lambda r: linear_trend(r.series("reward/mean"))[1]) for a in ARMS}
    slope = {a: per_seed(data, a, lambda r: linear_trend(r.series("reward/mean"))[0]) for a in ARMS}
    spikes = {a: per_seed(data, a, lambda r: len(kl_spikes(r.series("kl/mean")))) for a in ARMS}
    within = [mean(finals(data, a, "reward/std")) for a in ARMS]
    ends = [stdev(per_seed(data, a, lambda r: val_curve(r, "step")[1][-1])) for a in ARMS]
    return [
        claim("kl.last_step", "the last tenth of {} steps is one step) PPO {} [{}, {}] nats per response, "
              "REINFORCE-EMA {} [{}, {}], RLOO {} [{}, {}]; PPO − RLOO {} [{}, {}]",
              n if max(1, n // 10) == 1 else math.nan, *[mean_ci(kl_end[a]) for a in ARMS],
              welch(kl_end["ppo"], kl_end["rloo"])),
        claim("kl.last_quarter", "Over the last quarter of steps ({}–{}) PPO {} [{}, {}], EMA {} [{}, {}], RLOO {} "
              "[{}, {}], and PPO − RLOO {} [{}, {}] is within noise, as are PPO − EMA {} [{}, {}] and EMA − RLOO {} "
              "[{}, {}]",
              n - q + 1, n, *[mean_ci(kl_q[a]) for a in ARMS], welch(kl_q["ppo"], kl_q["rloo"]),
              welch(kl_q["ppo"], kl_q["reinforce_ema"]), welch(kl_q["reinforce_ema"], kl_q["rloo"])),
        claim("stability.step_noise", "the report's): PPO {} [{}, {}], EMA {} [{}, {}], RLOO {} [{}, {}]; PPO − "
              "RLOO {} [{}, {}], beyond noise", *[mean_ci(noise[a]) for a in ARMS], welch(noise["ppo"], noise["rloo"])),
        claim("stability.spread", "(std of `reward/mean` over the {} steps): PPO − RLOO {} [{}, {}]", n,
              welch(spread["ppo"], spread["rloo"])),
        claim("stability.residual", "The residual std around a least-squares line: PPO {} [{}, {}], EMA {} [{}, {}], "
              "RLOO {} [{}, {}], PPO − RLOO {} [{}, {}]", *[mean_ci(resid[a]) for a in ARMS],
              welch(resid["ppo"], resid["rloo"])),
        claim("stability.slope", "per step, per run): PPO {} [{}, {}], EMA {} [{}, {}], RLOO {} [{}, {}]; no arm's",
              *[mean_ci(slope[a]) for a in ARMS]),
        claim("stability.other", "Within-batch reward std {}–{} in every arm; KL spikes {} per PPO run, none in the "
              "REINFORCE arms; across seeds the final held-out reward spread {} (PPO), {} (EMA), {} (RLOO)",
              min(within), max(within),
              mean(spikes["ppo"]) if sum(spikes["reinforce_ema"] + spikes["rloo"]) == 0 else math.nan, *ends),
    ]


RELEVANCE, FIT = ("helpfulness", "complexity", "verbosity"), ("correctness", "coherence")


def dimension_claims(data: CompareData) -> list[Claim]:
    rows = data.eval_rows
    two_signals = all(len({r["normalised"][d] for d in RELEVANCE}) == 1 and len({r["normalised"][d] for d in FIT}) == 1
                      for r in rows)
    delta = {(a, dims): versus_base(data, a, lambda r, d=dims[0]: r["normalised"][d])
             for a in ARMS for dims in (RELEVANCE, FIT)}
    ps = [t_p_value(v) for v in delta.values()]
    adjusted = dict(zip(delta, holm(ps)))
    share = {dims: [mean(finals(data, a, f"attribution/{d}")) for a in ARMS for d in dims] for dims in (RELEVANCE, FIT)}
    return [
        claim("dims.ppo_relevance", "rose against base by {} [{}, {}], beyond seed noise but small",
              mean_ci(delta[("ppo", RELEVANCE)]) if two_signals else math.nan),
        claim("dims.holm", "but its p is {} (t over seeds) and it survives a Holm correction over the six (adjusted p "
              "{})",
              t_p_value(delta[("ppo", RELEVANCE)]), adjusted[("ppo", RELEVANCE)]),
        claim("dims.others", "Its fit dimensions (correctness, coherence) {}, within noise. RLOO {} (relevance) and {} "
              "(fit), EMA {} / {}: within noise", mean(delta[("ppo", FIT)]), mean(delta[("rloo", RELEVANCE)]),
              mean(delta[("rloo", FIT)]), mean(delta[("reinforce_ema", RELEVANCE)]),
              mean(delta[("reinforce_ema", FIT)])),
        claim("dims.attribution", "each relevance dimension carrying {}–{} of the advantage and each fit dimension "
              "{}–{}",
              min(share[RELEVANCE]), max(share[RELEVANCE]), min(share[FIT]), max(share[FIT])),
    ]


THRESHOLDS = (4, 5, 6, 8)


def quoting(data: CompareData) -> dict[tuple[str, int], tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """{(arm, words): (t interval over seeds, paired bootstrap interval over prompts)} of the quoting share − base."""
    return {(a, k): (mean_ci(versus_base(data, a, quotes(k))),
                     bootstrap_mean_ci(per_prompt_vs_base(data, a, quotes(k)))) for a in ARMS for k in THRESHOLDS}


def excludes_zero(ci: tuple[float, float, float]) -> bool:
    return ci[1] > 0 or ci[2] < 0


def hacking_claims(data: CompareData, quote: dict) -> list[Claim]:
    lengths = [mean(versus_base(data, a, lambda r: r["length"])) for a in ARMS]
    base_rows = eval_by_model(data)["base"]
    base_distinct = distinct_ngram_ratio([r["response"] for r in base_rows])
    distinct = [mean(distinct_ngram_ratio([r["response"] for r in rows]) - base_distinct
                     for rows in eval_by_model(data).values() if model_algorithm(rows) == a) for a in ARMS]
    conf = {a: versus_base(data, a, mean_conf) for a in ARMS}
    entropy = {a: per_seed(data, a, lambda r: early_late_delta(r, "entropy/mean")) for a in ARMS}
    ema = data.runs["reinforce_ema"]
    first_positive = {sum(1 for s in r.samples if s["step"] == 0 and s["advantage"] > 0) for r in ema}
    first_size = {sum(1 for s in r.samples if s["step"] == 0) for r in ema}
    settled = [r.series("reinforce/baseline")[1] for r in ema]
    first_means = [r.series("reinforce/return")[0] for r in ema]
    drift = max(abs(b - r.series("reinforce/baseline")[1]) for r in ema for b in r.series("reinforce/baseline")[1:])

    def positive(runs: list[Run], from_step: int = 0) -> list[float]:
        return [100 * mean(s["advantage"] > 0 for s in r.samples if s["step"] >= from_step) for r in runs]

    rloo5 = versus_base(data, "rloo", quotes(5))
    shares = [100 * mean(mean(quotes(5)(x) for x in rows) for rows in eval_by_model(data).values()
                         if model_algorithm(rows) == a) for a in ("rloo", "base")]
    robust = all(excludes_zero(ci) and ci[1] > 0 for k in THRESHOLDS for ci in quote[("rloo", k)])
    ema_not = [k for k in THRESHOLDS if k != 5 and not excludes_zero(quote[("reinforce_ema", k)][0])]
    email = eval_row(data, "rloo-seed0", "key point of this email")
    email_words = re.sub(r"\s+", " ", email["response"]).strip()
    quoted = "Please give me the key point of this email in one line: Hi all, just a reminder that the office will"
    person = eval_row(data, "rloo-seed0", "first person to third")
    copies = [eval_row(data, f"{a}-seed0", "Anna is taller")["reward"] for a in ("reinforce_ema", "rloo")]
    return [
        claim("hacking.length", "length {} (all at the {}-token cap", max(map(abs, lengths)),
              training_lengths(data)[1]),
        claim("hacking.distinct", "distinct bigrams {} to {} (within noise)", min(distinct), max(distinct)),
        claim("hacking.confidence", "judge confidence {} (PPO), {} (EMA) and **{} [{}, {}] for RLOO",
              mean(conf["ppo"]), mean(conf["reinforce_ema"]), mean_ci(conf["rloo"])),
        claim("hacking.entropy", "EMA {} [{}, {}] nats per token (beyond noise), RLOO {} [{}, {}] (within noise over "
              "seeds, but further than EMA's in every seed: {}, {}, {} against {}, {}, {}); PPO {}.",
              mean_ci(entropy["reinforce_ema"]), mean_ci(entropy["rloo"]),
              *[x if x < y else math.nan for x, y in zip(entropy["rloo"], entropy["reinforce_ema"])],
              entropy["reinforce_ema"], mean(entropy["ppo"])),
        claim("hacking.ema_baseline", "the baseline is 0 for the first batch only (all {} of its advantages positive "
              "in each seed); the first update sets it to that batch's mean return ({}, {}, {} for seeds {}, {}, {})",
              first_positive.pop() if first_positive == first_size else math.nan,
              *[s if abs(s - m) < 1e-6 else math.nan for s, m in zip(settled, first_means)], *[r.seed for r in ema]),
        claim("hacking.ema_within", "it stays within {} of that to the end", drift, at_most=True),
        claim("hacking.ema_positive", "of that to the end, so {}%, {}% and {}% of all advantages were positive ({}%, "
              "{}%, {}% from step {} on), against RLOO's {}%, {}%, {}%.", *positive(ema), *positive(ema, 1), 2,
              *positive(data.runs["rloo"])),
        claim("hacking.quoting", "by **{} [{}, {}] under RLOO** ({}% of its answers against {}% of base's; {} to {} in "
              "every seed), beyond noise at every threshold from {} to {} words", mean_ci(rloo5), *shares, min(rloo5),
              max(rloo5), *((min(THRESHOLDS), max(THRESHOLDS)) if robust else (math.nan, math.nan))),
        claim("hacking.quoting_ema", "this also called EMA's {} [{}, {}] beyond noise; that holds at five words over "
              "seeds only, not at {}, {} or {} words over seeds", quote[("reinforce_ema", 5)][0], ema_not),
        claim("hacking.quoting_ppo", "PPO {} (within noise at five words)", quote[("ppo", 5)][0][0]),
        claim("hacking.email", "office will\": {} consecutive words of the prompt; reward {}, base {};",
              quoted_words(email["response"], email["prompt"]) if email_words == quoted else math.nan,
              email["reward"], eval_row(data, "base", "key point of this email")["reward"]),
        claim("hacking.person", "repeating the sentence ({}, base {})", person["reward"],
              eval_row(data, "base", "first person to third")["reward"]),
        claim("hacking.copies", "for EMA and RLOO seed 0 copying the Anna/Ben/Chloe question: reward {})", max(copies)),
    ]


def quoting_table_claims(data: CompareData, quote: dict) -> list[Claim]:
    defaults = inspect.signature(bootstrap_mean_ci).parameters
    labels = {"ppo": "PPO", "reinforce_ema": "REINFORCE-EMA", "rloo": "RLOO"}
    out = [claim("quoting.method", "paired bootstrap interval over the {} prompts (per prompt, tuned − base averaged "
                 "over the arm's seeds; `stats.bootstrap_mean_ci`, {} resamples, seed {})",
                 len(eval_by_model(data)["base"]), defaults["resamples"].default, defaults["seed"].default),
           claim("quoting.header", "| arm | {} words | {} words (the report's) | {} words | {} words |",
                 THRESHOLDS[0], QUOTE_WORDS, *THRESHOLDS[2:])]
    for a in ARMS:
        cells = [(*quote[(a, k)][0], *quote[(a, k)][1][1:]) for k in THRESHOLDS]
        out.append(claim(f"quoting.{a}", f"| {labels[a]} |" + " {} [{}, {}] / [{}, {}] |" * 4, *cells))

    def where(arm: str, unit: int) -> list[int]:
        return [k for k in THRESHOLDS if excludes_zero(quote[(arm, k)][unit])]

    every = all(excludes_zero(quote[("rloo", k)][u]) for k in THRESHOLDS for u in (0, 1))
    out.append(claim("quoting.summary", "PPO's does over seeds at {} words and over prompts at {}; EMA's over seeds at "
                     "{} words and over prompts at {}.", *(where("ppo", 0) + where("ppo", 1) + where("reinforce_ema", 0)
                                                           + where("reinforce_ema", 1) if every else [math.nan])))
    return out


def conclusion_claims(data: CompareData) -> list[Claim]:
    within = [mean(finals(data, a, "reward/std")) for a in ARMS]
    kl_end = {a: mean(finals(data, a, "kl/mean")) for a in ARMS}
    gain = [val_curve(r)[1][-1] - val_curve(r)[1][0] for r in data.runs["rloo"]]
    spread = stdev(gain)
    ratio = mean(gain) / spread
    four = next(n for n in range(2, 100) if t_critical(0.95, n - 1) / math.sqrt(n) < ratio)
    runs = data.all_runs()
    # the whole command's training, first step to last, startups and validation included
    span = (max(r.metrics[-1]["clock/learner_end"] for r in runs)
            - min(r.metrics[0]["clock/rollout_start"] for r in runs))
    return [
        claim("support.std", "judge's rewards spread within a batch (std {}–{})", min(within), max(within)),
        claim("support.kl", "KL {} vs {} nats per response at the last step", kl_end["rloo"], kl_end["ppo"]),
        claim("support.rloo", "RLOO's {} [{}, {}] is the nearest", mean_ci(gain)),
        claim("support.quoting", "RLOO quotes the question in {} points more", 100 * mean(versus_base(data, "rloo",
                                                                                                     quotes(5)))),
        claim("support.cap", "while every evaluation answer here is cut at {} tokens", training_lengths(data)[1]),
        claim("scale.seeds", "At {} samples RLOO's gain is {} with a seed spread of {}: with three seeds a 95% t "
              "interval is ±{} spreads wide, so the same gain ({} spreads) needs four seeds (±{} spreads, t = {}) or "
              "a gain of ~{} to exclude zero", common_reach(runs, "samples"), mean(gain), spread,
              t_critical(0.95, 2) / math.sqrt(3), ratio, t_critical(0.95, four - 1) / math.sqrt(four) if four == 4
              else math.nan, t_critical(0.95, 3), t_critical(0.95, 2) / math.sqrt(3) * spread),
        claim("scale.five", "this said about five seeds (±{} spreads, t = {})", t_critical(0.95, 4) / math.sqrt(5),
              t_critical(0.95, 4)),
        claim("scale.time", "seeds per arm is {} runs, ~{} minutes at this run's step times", 5 * len(ARMS),
              5 * len(ARMS) * span / len(runs) / 60, tol=5),
    ]


def sizing_claims(data: CompareData) -> list[Claim]:
    sds, residual_ms, pooled = gain_variance_split(data)
    n_prompts = len(eval_by_model(data)["base"])
    split = load_prompts("bundled", "eval")
    training = pooled - residual_ms / n_prompts

    def sd(p: int) -> float:
        return math.sqrt(training + residual_ms / p)

    eval_gain = {a: mean(versus_base(data, a, lambda r: r["reward"])) for a in ARMS}
    gain = eval_gain["rloo"] if max(eval_gain, key=eval_gain.get) == "rloo" else math.nan
    first = load_compare(data.path / "first-run")
    first_gains = [mean(versus_base(first, a, lambda r: r["reward"])) for a in first.algorithms]
    runs = data.all_runs()
    seconds = sum(x for r in runs for x in r.series("time/step"))
    samples = sum(len(r.samples) for r in runs)
    reach = common_reach(runs, "samples")
    per_run = 4 * reach * seconds / samples / 60
    sizes = (n_prompts, len(split.prompts))
    table = [claim(f"sizing.table.{g}", f"| {g} |" + " {} |" * 4, *[seeds_for_power(sd(p), g, a)
                                                                     for p in sizes for a in (0.05, 0.05 / 3)])
             for g in (0.04, 0.08)]
    fewest = min(seeds_for_power(sd(p), g, a) for p in sizes for a in (0.05, 0.05 / 3) for g in (0.04, 0.08))
    return [
        claim("prereg.dimensions", "Holm over every dimension × arm test ({} with five dimensions and three arms)",
              len(data.dimensions) * len(ARMS)),
        claim("sizing.sd", "has a seed-to-seed standard deviation of {} (PPO), {} (EMA) and {} (RLOO), {} pooled over "
              "the arms", *sds, math.sqrt(pooled)),
        claim("sizing.split", "(the residual mean square, {} pooled) puts {} of that variance in the seed × prompt "
              "interaction, which shrinks with more prompts, and leaves a training part of SD {}", residual_ms,
              residual_ms / n_prompts / pooled, math.sqrt(training)),
        claim("sizing.sd_of_p", "the per-seed SD is √({}² + {} / P): {} at {}, {} at {} (the whole bundled eval "
              "split)",
              math.sqrt(training), residual_ms, sd(n_prompts), n_prompts, sd(len(split.prompts)), len(split.prompts)),
        claim("sizing.gain", "the gain to detect is {}, the size of RLOO's mean gain here ({} at {} samples per run, "
              "the largest of the three arms)", gain, gain, reach),
        claim("sizing.first_run", "(the first run, at {} samples per run, gave {} to {})",
              common_reach(first.all_runs(), "samples"), min(first_gains), max(first_gains)),
        claim("sizing.double", "assume more; {} is the case where it doubles", 2 * round(gain, 2)),
        claim("sizing.header", "| gain | {} prompts, α 0.05 | {} prompts, α 0.05/3 (Holm's first step, three arms) | "
              "{} prompts, α 0.05 | {} prompts, α 0.05/3 |", sizes[0], sizes[0], sizes[1], sizes[1]),
        *table,
        claim("sizing.time", "this run's {} training steps took {} s for {} samples, {} s per sample; a run of {} "
              "samples (four times {}) takes ~{} minutes of training steps before validation and evaluation, so 150 "
              "minutes hold {} such runs", sum(len(r.metrics) for r in runs), seconds, samples, seconds / samples,
              4 * reach, reach, per_run, math.floor(150 / per_run)),
        claim("sizing.arms", "Three arms do not fit at either gain (at least {} seeds per arm, {} runs)", fewest,
              len(ARMS) * fewest if len(ARMS) * fewest > math.floor(150 / per_run) else math.nan),
        claim("sizing.five_seeds", "with five seeds and {} evaluation prompts it detects a gain of {} at 80% power",
              sizes[1], (t_critical(0.95, 4) + t_critical(0.6, 4)) * sd(sizes[1]) / math.sqrt(5)),
    ]


def second_run_plan_claims(data: CompareData) -> list[Claim]:
    """The second run's plan: the power of four seeds, the evaluation judge's measured quality."""
    sds, residual_ms, pooled = gain_variance_split(data)
    n_eval = len(load_prompts("bundled", "eval").prompts)
    sd = math.sqrt(pooled - residual_ms / len(eval_by_model(data)["base"]) + residual_ms / n_eval)
    holdout = {r["config"]: r for r in json.loads((HERE.parents[1] / "bench" / "results" / "judge_quality_holdout.json")
                                                  .read_text())["results"]}
    ev, tr = holdout["likelihood, evaluation instruction"], holdout["likelihood"]
    return [
        claim("plan.four_seeds", "Four seeds at {} prompts detect a gain of {} at 80% power", n_eval,
              (t_critical(0.95, 3) + t_critical(0.6, 3)) * sd / math.sqrt(4)),
        claim("plan.eval_judge", "it ranks the good answer above the corrupted one in {} of pairs (worst targeted "
              "dimension {}), as the training judge does ({}, {})", ev["aggregate"], ev["worst_target"],
              tr["aggregate"], tr["worst_target"]),
    ]


def pilot_claims() -> list[Claim]:
    """docs/study/pilot2: the second run's seed 0, from its own files."""
    from xrlhf.judge import guards

    pilot = load_compare(HERE / "pilot2")
    run = pilot.runs["rloo"][0]
    steps = run.series("time/step")
    reward = run.series("reward/mean")
    val = [run.metrics[0]["val_start/reward"]] + [x for x in run.series("val/reward") if math.isfinite(x)]
    val_s = [x for x in run.series("time/val") if math.isfinite(x)]
    analysis = json.loads((HERE / "pilot2" / "analysis.json").read_text())["arms"]["rloo"]
    prompts = analysis["primary_prompts"]
    by_model = eval_by_model(pilot)

    def fired(model: str, kind: str | None = None) -> int:
        hits = [guards.check(r["prompt"], r["response"]) for r in by_model[model]]
        return sum(h is not None and (kind is None or h[0] == kind) for h in hits)

    base, tuned = "base", "rloo-seed0"
    return [
        claim("pilot.time", "48 steps took {} s of training steps (median {} s a step", sum(steps), median(steps),
              tol=1),
        claim("pilot.val_time", "plus {} s for the first validation point and about {} s for each later one",
              run.metrics[0]["time/val_start"], mean(val_s), tol=1),
        claim("pilot.reward", "{} at step 1, a mean of {} over steps 2–48, a least-squares slope of {} a step",
              reward[0], mean(reward[1:]), linear_trend(reward)[0]),
        claim("pilot.val", "went {}, {}, {}, {}, {} before step 1", *val),
        claim("pilot.gain", "96 prompts): {}, paired bootstrap interval over prompts [{}, {}]", prompts["mean"],
              prompts["lo"], prompts["hi"]),
        claim("pilot.guards", "fired on {} of the base model's {} answers ({} copies of the prompt, {} repetition "
              "loops) and on {} of the pilot's ({}, {})", fired(base), len(by_model[base]), fired(base, "prompt_copy"),
              fired(base, "repetition"), fired(tuned), fired(tuned, "prompt_copy"), fired(tuned, "repetition")),
        claim("pilot.shorter", "The answers got shorter ({} tokens) and quote the prompt less ({} points at five "
              "words)", analysis["hacking"]["length"]["mean"], 100 * analysis["hacking"]["quoting"]["mean"]),
        claim("pilot.off_policy", "Mean truncated importance weight {}; mean staleness {} updates",
              analysis["off_policy"]["importance_weight"]["mean"], analysis["off_policy"]["staleness"]["mean"]),
    ]


def run2_claims() -> list[Claim]:
    """docs/study/run2: the second run's four seeds, their evaluation and its pre-registered analysis."""
    from xrlhf.judge import guards

    run2 = load_compare(HERE / "run2")
    runs = sorted(run2.runs["rloo"], key=lambda r: r.name)
    a = json.loads((HERE / "run2" / "analysis.json").read_text())["arms"]["rloo"]
    by_model = eval_by_model(run2)
    base = {r["prompt_id"]: r for r in by_model["base"]}
    tuned = [f"rloo-seed{i}" for i in range(4)]

    def hit(row: dict, kind: str | None = None) -> bool:
        h = guards.check(row["prompt"], row["response"])
        return h is not None and (kind is None or h[0] == kind)

    def unguarded(model: str) -> list[float]:
        return [r["reward"] - base[r["prompt_id"]]["reward"] for r in by_model[model]
                if not hit(r) and not hit(base[r["prompt_id"]])]

    def example(words: str, model: str, response: str | None = None) -> float:
        """The reward of `model`'s answer to the one evaluation prompt containing `words` (its text checked too)."""
        [row] = [r for r in by_model[model] if words in r["prompt"]]
        if response is not None and row["response"].strip() != response:
            raise SystemExit(f"{model}'s answer to the {words!r} prompt is not {response!r}")
        return row["reward"]

    pri, pp, dims, hack = a["primary"], a["primary_prompts"], a["dimensions"], a["hacking"]
    q, sens = hack["quoting"], hack["quoting_sensitivity"]
    val_end = [a["validation"][m][-1] for m in tuned]
    val_s = [r.metrics[0]["time/val_start"] + sum(x for x in r.series("time/val") if math.isfinite(x)) for r in runs]
    names = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    return [
        claim("run2.primary", "by **{}**\n(per seed {}, {}, {}, {}), 95% t interval over seeds [{}, {}], p = {}",
              pri["mean"], *pri["per_seed"], pri["lo"], pri["hi"], pri["p"]),
        claim("run2.primary_prompts", "over prompts as well (paired bootstrap\n[{}, {}])", pp["lo"], pp["hi"]),
        claim("run2.primary_lo", "the interval's lower end is {}", pri["lo"]),
        claim("run2.guards", "fired on {} of the base model's {} answers and on {}, {}, {} and {} of the four seeds' "
              "(repetition loops {} → {},\n{}, {}, {})", sum(hit(r) for r in by_model["base"]), len(by_model["base"]),
              *[sum(hit(r) for r in by_model[m]) for m in tuned], sum(hit(r, "repetition") for r in by_model["base"]),
              *[sum(hit(r, "repetition") for r in by_model[m]) for m in tuned]),
        claim("run2.unguarded", "({}, {}, {} and {}\nprompts), the gain is {}, {}, {} and {}",
              *[len(unguarded(m)) for m in tuned], *[mean(unguarded(m)) for m in tuned]),
        claim("run2.dims", "(helpfulness {}, correctness {}, coherence {}, complexity {}, verbosity {})",
              *[dims[n]["mean"] for n in names]),
        claim("run2.dims_prompts", "over\nprompts every interval excludes zero", tol=0) if all(
            dims[n]["prompts"]["lo"] > 0 for n in names) else claim("run2.dims_prompts", "(not all exclude zero)"),
        claim("run2.dims_holm", "(helpfulness's\np {} becomes {}; the others' {})", dims["helpfulness"]["p"],
              dims["helpfulness"]["p_holm"], max(dims[n]["p_holm"] for n in names[1:]),
              tol=None) if all(not dims[n]["beyond_noise"] for n in names) else claim("run2.dims_holm", "(one is)"),
        claim("run2.length", "**shorter** by {} tokens (over seeds [{}, {}]", -hack["length"]["mean"],
              hack["length"]["lo"], hack["length"]["hi"]),
        claim("run2.distinct", "(distinct word-bigram ratio {} [{}, {}]", hack["distinct2"]["mean"],
              hack["distinct2"]["lo"], hack["distinct2"]["hi"]),
        claim("run2.quoting", "fell by {} points, not\nbeyond noise (over prompts [{}, {}])", -100 * q["mean"],
              100 * q["prompts"]["lo"], 100 * q["prompts"]["hi"]),
        claim("run2.quoting_sens", "at 4, 6 and 8 words it fell by {}, {} and {} points",
              *[-100 * sens[k]["mean"] for k in ("4", "6", "8")]),
        claim("run2.near_copy", "Near-copies fell by {} points", -100 * hack["near_copy"]["mean"]),
        claim("run2.seed3_copies", "({} copy guards against {})", sum(hit(r, "prompt_copy") for r in by_model[tuned[3]]),
              sum(hit(r, "prompt_copy") for r in by_model["base"])),
        claim("run2.slope", "rose by {} a step (t interval over seeds [{}, {}], p {}", a["reward_slope"]["mean"],
              a["reward_slope"]["lo"], a["reward_slope"]["hi"], a["reward_slope"]["p"]),
        claim("run2.slope_range", "per seed {} to {}), about {} over 48 steps", min(a["reward_slope"]["per_seed"]),
              max(a["reward_slope"]["per_seed"]), 47 * a["reward_slope"]["mean"]),
        claim("run2.residual", "residual standard deviation of {}", a["stability_residual_sd"]["mean"]),
        claim("run2.kl", "last quarter of steps: {} nats per response ([{}, {}])", a["kl_last_quarter"]["mean"],
              a["kl_last_quarter"]["lo"], a["kl_last_quarter"]["hi"]),
        claim("run2.val", "went from {} before step 1 to {}, {}, {} and\n{} after step 48",
              runs[0].metrics[0]["val_start/reward"], *val_end),
        claim("run2.seed3_gain", "on 96 prompts is {}", pri["per_seed"][3]),
        claim("run2.off_policy", "Mean truncated importance weight {} over seeds; staleness {} updates",
              a["off_policy"]["importance_weight"]["mean"], a["off_policy"]["staleness"]["mean"]),
        claim("run2.example_garden", "and loops (reward {}); seeds 2 and 3 answer \"The length of the\ngarden is 12 m "
              "and the width is 10 m.\" ({}), seed 1 \"The length of the garden is 12 m.\" ({})",
              example("rectangular garden", "base"), example("rectangular garden", "rloo-seed2", "The length of the garden is 12 m and the "
                                                 "width is 10 m."),
              example("rectangular garden", "rloo-seed1", "The length of the garden is 12 m.")),
        claim("run2.example_message", "the message ({}); seeds 0 and 1 give the paraphrase once ({})",
              example("customer message", "base"), example("customer message", "rloo-seed0")),
        claim("run2.example_copy", "repeats the request ({}) where the base model wrote one sentence about writing the "
              "story ({})", example("bedtime story", "rloo-seed3"), example("bedtime story", "base")),
        claim("run2.time", "training steps took {} (other work shared the machine), {}, {} and {} s, their\n"
              "validation points {} s in all", *[sum(r.series("time/step")) for r in runs], sum(val_s), tol=1),
    ]


def all_claims(data: CompareData) -> list[Claim]:
    quote = quoting(data)
    return (setup_claims(data) + ema_claims(data) + results_claims(data) + kl_stability_claims(data)
            + dimension_claims(data) + hacking_claims(data, quote) + quoting_table_claims(data, quote)
            + conclusion_claims(data) + sizing_claims(data) + second_run_plan_claims(data)
            + pilot_claims() + run2_claims())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=HERE.parent / "STUDY.md", help="the STUDY.md to check")
    parser.add_argument("--runs", type=Path, default=HERE, help="the committed run (compare.json and its runs)")
    args = parser.parse_args(argv)
    data = load_compare(args.runs)
    rows, failures = check(args.study.read_text(encoding="utf-8"), all_claims(data))
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'claim':<{width}}  {'STUDY.md':>9}  {'recomputed':>12}  {'tolerance':>9}")
    for cid, written, value, tol, ok in rows:
        print(f"{cid:<{width}}  {written:>9}  {value:>12.6g}  {tol:>9}  {'ok' if ok else 'MISMATCH'}")
    print("not recomputed (the committed files cannot give them):")
    for line in NOT_RECOMPUTED:
        print(f"  {line}")
    if failures:
        print(f"{len(failures)} claim(s) do not hold:", *failures, sep="\n  ")
        return 1
    print(f"all {len(rows)} numbers hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
