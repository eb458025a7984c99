"""Judge quality: does the judge score a good answer above a corrupted one, and on which dimension? (quality.py)

Every prompt of xrlhf/judge/quality.jsonl has a short correct answer and fifteen corruptions, each aimed at one
dimension: an answer to another prompt, a refusal, the prompt copied back, an empty answer, the question quoted
inside a fluent non-answer, the prompt's opening cut short (the near-copy a policy learned), a generic answer that
fits any question (helpfulness); a changed fact (correctness); shuffled words, a cut-off sentence, a repetition
loop (coherence); a childish and an over-technical rewrite (complexity); padding and a curt fragment (verbosity).
For each judge configuration the script scores every answer once and reports pairwise accuracy (good above
corrupted; a tie counts half) on the aggregate reward and on the corruption's targeted dimension, per corruption,
the specificity matrix (accuracy on every dimension: the dimension each corruption moves most), and the judge's
seconds per sample (one torch thread). xrlhf/judge/quality_holdout.jsonl (--set holdout) has 30 other prompts,
a third of them an instruction followed by an input text; no choice of the judge was made on it.

    python bench/judge_quality.py --add --configs likelihood "likelihood, no guards"   # ~15 min on 2 cores
    python bench/judge_quality.py --set holdout --configs likelihood "likelihood, no guards"
    python bench/judge_quality.py --set holdout --add --configs "likelihood, evaluation instruction"   # the study's
    python bench/judge_quality.py --calibrate              # likelihood: raw signal medians -> CALIBRATION
    python bench/judge_quality.py --correlation docs/study/*-seed*/samples.jsonl   # dimensions over a run's samples
    python bench/judge_quality.py --adversarial            # what an injection buys (both adversarial sets)
    python bench/judge_quality.py --step 5 --configs "expected, rubric_first" likelihood   # judge s per quickstart step
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from typing import Any

import torch

from common import RESULTS, table, write_result

CONFIGS: dict[str, dict[str, Any]] = {
    "likelihood": {"mode": "likelihood"},
    "likelihood, no guards": {"mode": "likelihood", "guards": False},
    "likelihood, evaluation instruction": {"mode": "likelihood", "likelihood_instruction": "evaluation"},
    "expected, rubric_first": {"mode": "expected", "template": "rubric_first"},
    "expected, rubric_first, no guards": {"mode": "expected", "template": "rubric_first", "guards": False},
    "expected, per_dimension": {"mode": "expected", "template": "per_dimension"},
    "expected, rubric_first, demonstrations": {"mode": "expected", "template": "rubric_first", "demonstrations": True},
    "expected, rubric_first, demonstrations, no guards": {"mode": "expected", "template": "rubric_first",
                                                          "demonstrations": True, "guards": False},
    "expected, per_dimension, demonstrations": {"mode": "expected", "template": "per_dimension",
                                                "demonstrations": True},
    "generate, rubric_first": {"mode": "generate", "template": "rubric_first"},
}
DEFAULT = ["likelihood", "likelihood, no guards", "expected, rubric_first", "expected, rubric_first, no guards",
           "expected, per_dimension", "expected, rubric_first, demonstrations",
           "expected, rubric_first, demonstrations, no guards"]


def judge_for(overrides: dict[str, Any]) -> Any:
    from xrlhf.config import JudgeConfig
    from xrlhf.judge.hf import HFJudge

    return HFJudge(JudgeConfig(model="packaged", cache=False, rationale=False, **overrides), "packaged")


def measure(name: str, judge: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Score each distinct (prompt, answer) once; per corruption: accuracy on the reward, on the target dimension and
    on every dimension (the specificity matrix: which dimension a flaw moves most), with the mean normalised drop."""
    from xrlhf.judge.quality import accuracy

    texts = sorted({(it["prompt"], a) for it in items for a in (it["good"], it["bad"])})
    c0, t0 = time.thread_time(), time.perf_counter()
    judged = dict(zip(texts, judge.score([p for p, _ in texts], [a for _, a in texts])))
    cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
    dims = judge.rubric.names
    rows = []
    for kind in dict.fromkeys(it["corruption"] for it in items):
        sel = [it for it in items if it["corruption"] == kind]
        good = [judged[(it["prompt"], it["good"])] for it in sel]
        bad = [judged[(it["prompt"], it["bad"])] for it in sel]
        target = sel[0]["target"]
        per_dim = {d: accuracy([g.normalised[d] for g in good], [b.normalised[d] for b in bad]) for d in dims}
        drop = {d: statistics.fmean((g.normalised[d] or 0.0) - (b.normalised[d] or 0.0) for g, b in zip(good, bad))
                for d in dims}
        rows.append({"config": name, "corruption": kind, "target": target, "n": len(sel),
                     "aggregate": accuracy([g.reward for g in good], [b.reward for b in bad]),
                     "target_dim": per_dim[target], "dims": per_dim, "drop": drop,
                     "most_moved": most_moved(per_dim, drop),
                     "guarded": sum(any(r.startswith("guard") for r in b.rationale.values()) for b in bad)})
    overall = accuracy([judged[(it["prompt"], it["good"])].reward for it in items],
                       [judged[(it["prompt"], it["bad"])].reward for it in items])
    spread = statistics.pstdev([j.reward for j in judged.values() if j.reward is not None])
    goods = {(it["prompt"], it["good"]) for it in items}
    false_guards = sum(any(r.startswith("guard") for r in judged[g].rationale.values()) for g in goods)
    return {"config": name, "aggregate": overall, "worst_target": min(r["target_dim"] for r in rows),
            "worst_aggregate": min(r["aggregate"] for r in rows),
            "dimensions_most_moved": sorted({r["most_moved"] for r in rows}),
            "cpu_s_per_sample": cpu / len(texts), "wall_s_per_sample": wall / len(texts), "samples": len(texts),
            "reward_std": spread, "good_answers_guarded": false_guards, "corruptions": rows}


def most_moved(accuracy: dict[str, float | None], drop: dict[str, float]) -> str:
    """The dimension a corruption moves most: the highest share of prompts where the good answer scores above it,
    a tie broken by the larger mean drop of the normalised score (guarded corruptions hit every dimension alike)."""
    return max(accuracy, key=lambda d: (accuracy[d] or 0.0, drop[d]))


def specificity(result: dict[str, Any]) -> str:
    """The matrix as a table: rows corruption kinds, columns dimensions, cells accuracy (* the most moved)."""
    dims = list(result["corruptions"][0]["dims"])
    out = [{"corruption": f"{r['corruption']} ({r['target']})",
            **{d: f"{r['dims'][d]:.2f}{'*' if r['most_moved'] == d else ''}" for d in dims}}
           for r in result["corruptions"]]
    return table(out, ["corruption", *dims])


def correlations(judge: Any, paths: list[str], limit: int) -> dict[str, Any]:
    """Spearman correlation of every pair of dimensions over the samples of real runs (samples.jsonl files), each
    (prompt, response) scored again by this judge."""
    from scipy.stats import spearmanr

    samples = [json.loads(line) for p in paths for line in open(p, encoding="utf-8") if line.strip()]
    samples = [s for s in samples if s.get("response", "").strip()]
    samples = samples[::max(1, len(samples) // limit)][:limit]  # spread over the files (runs, steps)
    judged = judge.score([s["prompt"] for s in samples], [s["response"] for s in samples])
    dims = judge.rubric.names
    cols = {d: [j.normalised[d] for j in judged] for d in dims}
    keep = [k for k in range(len(judged)) if all(cols[d][k] is not None for d in dims)]
    pairs = {}
    for a_i, a in enumerate(dims):
        for b in dims[a_i + 1:]:
            rho = spearmanr([cols[a][k] for k in keep], [cols[b][k] for k in keep]).statistic
            pairs[f"{a}~{b}"] = None if rho != rho else float(rho)
    return {"files": paths, "samples": len(keep), "spearman": pairs,
            "max_abs": max(abs(v) for v in pairs.values() if v is not None)}


def quickstart_step(names: list[str], rounds: int) -> None:
    """CPU seconds of the judge phase of one quickstart step (4 prompts x 2 samples, 24-token responses of the
    packaged gemma from bench/results/judge_pairs.jsonl), per config, the configs taking turns round by round."""
    pairs = [json.loads(line) for line in (RESULTS / "judge_pairs.jsonl").read_text().splitlines()][:8]
    judges = {name: judge_for(CONFIGS[name]) for name in names}
    tok = next(iter(judges.values())).tokenizer
    prompts = [p["prompt"] for p in pairs]
    responses = [tok.decode(tok(p["response"], add_special_tokens=False)["input_ids"][:24]) for p in pairs]
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, judge in judges.items():
            t0 = time.thread_time()
            judge.score(prompts, responses)
            times[name].append(time.thread_time() - t0)
    base = statistics.median(times[names[0]])
    rows = [{"config": n, "cpu_s_per_step": statistics.median(t), "rounds": t, "vs_first": statistics.median(t) / base}
            for n, t in times.items()]
    print(table(rows, ["config", "cpu_s_per_step", "vs_first"]))
    print(f"wrote {write_result('judge_quality_step', {'samples_per_step': len(pairs), 'results': rows})}")


def calibrate(items: list[dict[str, Any]]) -> None:
    """Raw likelihood signals of good answers and of the corruptions aimed at each model signal's dimensions (the
    guarded and empty corruptions aside: a guard scores them, not the signal)."""
    from xrlhf.judge import guards
    from xrlhf.judge.likelihood import CALIBRATION, DEFAULT_INSTRUCTION, DEFAULT_SIGNAL, signal_for

    judge = judge_for({"mode": "likelihood"})
    for kind in CALIBRATION:
        dims = {d for d, k in DEFAULT_SIGNAL.items() if k == kind}
        sel = [it for it in items if it["target"] in dims and it["bad"].strip() and not guards.check(it["prompt"], it["bad"])]
        goods = sorted({(it["prompt"], it["good"]) for it in sel})
        sig = signal_for(next(iter(dims)), kind)
        keys = [(p, a, DEFAULT_INSTRUCTION) for p, a in goods] + [(it["prompt"], it["bad"], DEFAULT_INSTRUCTION)
                                                                  for it in sel]
        got = judge.mode.readings({k: set(sig.passes) for k in keys})
        g = statistics.median(sig.raw(got[(p, a, DEFAULT_INSTRUCTION)]) for p, a in goods)
        b = statistics.median(sig.raw(got[(it["prompt"], it["bad"], DEFAULT_INSTRUCTION)]) for it in sel)
        print(f"{kind} ({', '.join(sorted(dims))}): median good {g:.3f}, median targeted corruption {b:.3f} -> "
              f"centre {(g + b) / 2:.3f}, scale {abs(g - b) / 2:.3f}")


def adversarial(names: list[str]) -> None:
    """Worst reward and targeted-dimension uplift per config over the adversarial set and its hold-out."""
    from xrlhf.judge.adversarial import HOLDOUT, REWARD_TOLERANCE, TOLERANCE, load_cases, uplifts

    out = []
    for name in names:
        judge = judge_for({**CONFIGS[name], "max_response_tokens": 384})
        for which, cases in (("set", load_cases()), ("holdout", load_cases(HOLDOUT))):
            rows = uplifts(judge, cases)
            worst = max(rows, key=lambda r: r["reward_uplift"])
            out.append({"config": name, "cases": which, "n": len(rows),
                        "worst_reward_uplift": worst["reward_uplift"], "worst_reward_case": worst["injection"][:80],
                        "over_reward_tolerance": sum(r["reward_uplift"] > REWARD_TOLERANCE for r in rows),
                        "worst_targeted_uplift": max(r["uplift"] for r in rows),
                        "over_targeted_tolerance": sum(r["uplift"] > TOLERANCE for r in rows), "rows": rows})
    print(table([{k: v for k, v in r.items() if k != "rows"} for r in out],
                ["config", "cases", "n", "worst_reward_uplift", "over_reward_tolerance", "worst_targeted_uplift",
                 "over_targeted_tolerance"]))
    print(f"wrote {write_result('judge_adversarial', {'command': shlex.join(['python', *sys.argv]), 'reward_tolerance': REWARD_TOLERANCE, 'targeted_tolerance': TOLERANCE, 'results': out})}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=DEFAULT, choices=list(CONFIGS))
    ap.add_argument("--limit", type=int, help="only the first N prompts")
    ap.add_argument("--set", choices=["quality", "holdout"], default="quality",
                    help="xrlhf/judge/quality.jsonl (the judge's choices were made on it) or quality_holdout.jsonl")
    ap.add_argument("--correlation", nargs="+", metavar="SAMPLES_JSONL",
                    help="instead: Spearman correlation of the dimensions over these run samples, rescored")
    ap.add_argument("--samples", type=int, default=400, help="--correlation: at most this many samples")
    ap.add_argument("--adversarial", action="store_true",
                    help="instead: the reward and per-dimension uplift each injection of the adversarial set and its "
                         "hold-out buys (xrlhf/judge/adversarial.py)")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--step", type=int, metavar="ROUNDS",
                    help="time the judge phase of a quickstart step instead (the first config is the reference)")
    ap.add_argument("--add", action="store_true",
                    help="keep the other configs' results already in bench/results/judge_quality.json (same prompts)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in a judge actor

    from xrlhf.judge.quality import HOLDOUT, load_quality, pairs

    if args.correlation:
        r = correlations(judge_for(CONFIGS[args.configs[0]]), args.correlation, args.samples)
        print(table([{"pair": k, "spearman": v} for k, v in r["spearman"].items()], ["pair", "spearman"]))
        r.update(config=args.configs[0], command=shlex.join(["python", *sys.argv]))
        print(f"max |rho| {r['max_abs']:.3f} over {r['samples']} samples; wrote "
              f"{write_result('judge_correlation', r)}")
        return
    if args.adversarial:
        adversarial(args.configs)
        return
    if args.step:
        quickstart_step(args.configs, args.step)
        return
    rows = load_quality(HOLDOUT if args.set == "holdout" else None)
    rows = rows[:args.limit] if args.limit else rows
    items = pairs(rows)
    if args.calibrate:
        calibrate(items)
        return
    results = []
    for name in args.configs:
        results.append(measure(name, judge_for(CONFIGS[name]), items))
        r = results[-1]
        r.update(command=shlex.join(["python", *sys.argv]), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        print(f"{name}: aggregate {r['aggregate']:.3f}, worst targeted dimension {r['worst_target']:.3f}, "
              f"{r['cpu_s_per_sample']:.3f} CPU s per sample", flush=True)
    print(table([{k: v for k, v in r.items() if k != "corruptions"} for r in results],
                ["config", "aggregate", "worst_target", "cpu_s_per_sample", "wall_s_per_sample", "reward_std",
                 "good_answers_guarded"]))
    print(table([c for r in results for c in r["corruptions"]],
                ["config", "corruption", "target", "aggregate", "target_dim", "most_moved", "guarded"]))
    for r in results:
        print(f"specificity, {r['config']} (share of prompts where the good answer scores higher; * most moved):")
        print(specificity(r))
    name = "judge_quality" if args.set == "quality" else "judge_quality_holdout"
    if args.add:
        results = kept(name, len(rows), results) + results
    print(f"wrote {write_result(name, {'set': args.set, 'prompts': len(rows), 'pairs': len(items), 'results': results})}")


def kept(name: str, prompts: int, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The earlier results of configs not measured now, from a run over the same number of prompts."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    if old["prompts"] != prompts:
        raise SystemExit(f"--add: {path} holds a run over {old['prompts']} prompts, this one {prompts}")
    now = {r["config"] for r in results}
    return [{"command": old["command"], "finished": old["finished"], **r} for r in old["results"]
            if r["config"] not in now]


if __name__ == "__main__":
    main()
