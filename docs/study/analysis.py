"""The study's pre-registered analysis (docs/STUDY.md, "Pre-registered analysis"), as code: every number it asks for,
from one compare directory's files, written to CMP/analysis.json and printed.

    python docs/study/analysis.py docs/study/run2          # the second run
    python docs/study/analysis.py docs/study/pilot2        # its pilot (one seed: no interval over seeds)

Written before the second run and not changed by its results. Per arm:
- primary: per seed, the mean over the evaluation prompts of (tuned − base) reward under the evaluation judge; mean,
  95% t interval and p over seeds, Holm over the arms; per prompt (tuned − base averaged over seeds), the paired
  bootstrap interval (10,000 resamples, seed 0);
- the training reward's rise: per seed, the least-squares slope of reward/mean over the steps; t over seeds;
- KL paid: per seed, the mean of kl/mean over the last quarter of steps;
- stability: per seed, the residual standard deviation of reward/mean around that line;
- which dimension moved: per seed and dimension, tuned − base of the evaluation judge's normalised score; t over
  seeds, Holm over every dimension × arm;
- hacking against base: quoting (share of answers repeating ≥ 5 consecutive prompt words; 4, 6, 8 beside it),
  near-copies (the copy guard fires), blandness (distinct word-bigram ratio of the seed's answers), length (tokens);
  seeds as the unit, and prompts as well where a per-prompt value exists (all but blandness); no correction;
- the pipelined step's off-policy correction: the mean truncated importance weight and staleness per seed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from statistics import mean
from typing import Any, Callable

from xrlhf.judge import guards
from xrlhf.report.data import Run, eval_by_model, load_compare, model_algorithm
from xrlhf.report.study import distinct_ngram_ratio, quoted_words
from xrlhf.stats import bootstrap_mean_ci, holm, linear_trend, mean_ci, t_p_value

QUOTE_WORDS, QUOTE_SENSITIVITY = 5, (4, 6, 8)
ALPHA = 0.05


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, 95% t interval and two-sided p over seeds, with the per-seed values."""
    m, lo, hi = mean_ci(values)
    return {"mean": m, "lo": lo, "hi": hi, "p": t_p_value(values), "per_seed": values}


def over_prompts(diffs: dict[Any, list[float]]) -> dict[str, Any]:
    """Per prompt, the mean over seeds of a tuned − base difference; the paired bootstrap interval over prompts."""
    per_prompt = [mean(v) for v in diffs.values() if v]
    m, lo, hi = bootstrap_mean_ci(per_prompt)
    return {"mean": m, "lo": lo, "hi": hi, "prompts": len(per_prompt)}


def excludes_zero(r: dict[str, Any]) -> bool:
    return math.isfinite(r["lo"]) and (r["lo"] > 0 or r["hi"] < 0)


def versus_base(models: dict[str, list[dict]], base: dict[Any, dict], value: Callable[[dict], float]
                ) -> tuple[list[float], dict[Any, list[float]]]:
    """(per seed: mean over prompts of value(tuned) − value(base), per prompt: that difference for each seed)."""
    seeds, prompts = [], {}
    for rows in models.values():
        d = [(r["prompt_id"], value(r) - value(base[r["prompt_id"]])) for r in rows if r["prompt_id"] in base]
        seeds.append(mean(x for _, x in d))
        for pid, x in d:
            prompts.setdefault(pid, []).append(x)
    return seeds, prompts


def quotes(words: int) -> Callable[[dict], float]:
    return lambda r: float(quoted_words(str(r["response"]), str(r["prompt"])) >= words)


def near_copy(r: dict) -> float:
    fired = guards.check(str(r["prompt"]), str(r["response"]))
    return float(fired is not None and fired[0] == "prompt_copy")


def series_quarter(run: Run, key: str) -> float:
    xs = [x for x in run.series(key) if math.isfinite(x)]
    tail = xs[-max(1, len(xs) // 4):]
    return mean(tail) if tail else math.nan


def analyse(cmp: Path) -> dict[str, Any]:
    data = load_compare(cmp)
    by_model = eval_by_model(data)
    base = {r["prompt_id"]: r for rows in by_model.values() if model_algorithm(rows) == "base" for r in rows}
    if not base:
        raise SystemExit(f"{cmp}/eval/eval.jsonl has no base-model rows: has the evaluation run?")
    out: dict[str, Any] = {"compare": str(cmp), "evaluation_judge": data.meta.get("judges", {}).get("evaluation"),
                           "eval_prompts": len(base), "arms": {}}
    for arm in data.algorithms:
        models = {m: rows for m, rows in by_model.items() if model_algorithm(rows) == arm}
        runs = data.runs.get(arm, [])
        gain, gain_prompts = versus_base(models, base, lambda r: float(r["reward"]))
        a: dict[str, Any] = {"seeds": len(models), "primary": interval(gain), "primary_prompts": over_prompts(gain_prompts)}
        trends = [linear_trend(r.series("reward/mean")) for r in runs]
        a["reward_slope"] = interval([s for s, _ in trends])
        a["stability_residual_sd"] = interval([sd for _, sd in trends])
        a["kl_last_quarter"] = interval([series_quarter(r, "kl/mean") for r in runs])
        a["dimensions"] = {}
        for dim in data.dimensions:
            seeds, prompts = versus_base(models, base, lambda r, d=dim: float(r["normalised"][d]))
            a["dimensions"][dim] = {**interval(seeds), "prompts": over_prompts(prompts)}
        hacking: dict[str, Any] = {}
        for name, value in [("quoting", quotes(QUOTE_WORDS)), ("near_copy", near_copy),
                            ("length", lambda r: float(r["length"]))]:
            seeds, prompts = versus_base(models, base, value)
            hacking[name] = {**interval(seeds), "prompts": over_prompts(prompts)}
        base_distinct = distinct_ngram_ratio([r["response"] for r in base.values()])
        hacking["distinct2"] = interval([distinct_ngram_ratio([r["response"] for r in rows]) - base_distinct
                                         for rows in models.values()])
        hacking["quoting_sensitivity"] = {str(w): interval(versus_base(models, base, quotes(w))[0])
                                          for w in QUOTE_SENSITIVITY}
        for h in hacking.values():
            if "mean" in h:
                h["beyond_noise_seeds"] = bool(excludes_zero(h))
                if "prompts" in h:
                    h["beyond_noise_prompts"] = bool(excludes_zero(h["prompts"]))
        a["hacking"] = hacking
        a["off_policy"] = {key.split("/")[1]: interval([mean(x for x in r.series(key) if math.isfinite(x))
                                                        for r in runs if r.has(key)])
                           for key in ("async/importance_weight", "async/staleness")}
        val = [[x for x in r.series("val/reward") if math.isfinite(x)] for r in runs]
        a["validation"] = {r.name: v for r, v in zip(runs, val)}
        out["arms"][arm] = a
    # Holm over the arms (primary) and over every dimension × arm
    arms = list(out["arms"])
    for arm, p in zip(arms, holm([out["arms"][a]["primary"]["p"] for a in arms])):
        prim = out["arms"][arm]["primary"]
        prim["p_holm"] = p
        prim["beyond_noise"] = bool(math.isfinite(p) and p < ALPHA)
        prim["beyond_noise_prompts"] = bool(excludes_zero(out["arms"][arm]["primary_prompts"]))
    cells = [(a, d) for a in arms for d in out["arms"][a]["dimensions"]]
    for (a, d), p in zip(cells, holm([out["arms"][a]["dimensions"][d]["p"] for a, d in cells])):
        out["arms"][a]["dimensions"][d]["p_holm"] = p
        out["arms"][a]["dimensions"][d]["beyond_noise"] = bool(math.isfinite(p) and p < ALPHA)
    for arm in arms:
        s = out["arms"][arm]["reward_slope"]
        s["beyond_noise"] = bool(excludes_zero(s))
    return out


def show(out: dict[str, Any]) -> str:
    def f(r: dict[str, Any], key: str = "") -> str:
        return f"{r['mean']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]" + (f" p={r['p']:.3g}" if "p" in r else "")

    lines = [f"{out['compare']}: {out['eval_prompts']} evaluation prompts, judge {out['evaluation_judge']}"]
    for arm, a in out["arms"].items():
        lines += [f"{arm} ({a['seeds']} seeds)",
                  f"  held-out gain over base: {f(a['primary'])} (Holm {a['primary'].get('p_holm', math.nan):.3g}); "
                  f"over prompts {f(a['primary_prompts'])}",
                  f"  training reward slope per step: {f(a['reward_slope'])}",
                  f"  KL, last quarter: {f(a['kl_last_quarter'])}; residual SD: {f(a['stability_residual_sd'])}"]
        for d, r in a["dimensions"].items():
            lines.append(f"  {d}: {f(r)} (Holm {r['p_holm']:.3g}); over prompts {f(r['prompts'])}")
        for h, r in a["hacking"].items():
            if "mean" in r:
                lines.append(f"  hacking {h}: {f(r)}" + (f"; over prompts {f(r['prompts'])}" if "prompts" in r else ""))
        lines.append(f"  off-policy: importance weight {f(a['off_policy']['importance_weight'])}, "
                     f"staleness {f(a['off_policy']['staleness'])}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("compare", type=Path)
    args = ap.parse_args()
    out = analyse(args.compare)
    (args.compare / "analysis.json").write_text(json.dumps(out, indent=1) + "\n")
    print(show(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
