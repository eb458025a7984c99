"""The likelihood judge with each prompt's question computed once for its samples, against once per sample.

The judge scores a response after its instructions and its question ("Question: ...\nAnswer:"); a step of the
study holds 4 samples of each of 4 prompts, so the question is the same text four times. "grouped" is the judge as
it is now (xrlhf.judge.scoring.grouped_tail_logprobs: a row per question, its responses packed after it, each
masked from the others); "per sample" is the previous path (tail_logprobs on every question + response, the
instructions from the same cache). Both judge the same 16 samples of a study step (the committed samples of
docs/study, so every run judges the same text) with the study's judge (configs/study.yaml: packaged gemma-3-270m,
likelihood mode, guards on, the judge's score cache off), one torch thread, alternating A B / B A per round; CPU
seconds of the thread. The rewards of both sides are compared.

With `--compare linears` the two sides are instead the judge as it is with its linear layers tuned (judge.tune_linears:
each runs the product measured fastest for its shape, oneDNN-packed weights among them;
xrlhf.policy.generation.tuned_linears)
and without (the layers' own forward), both grouped; written to bench/results/judge_linears.json.

    python bench/judge_prompts.py               # 6 rounds (study steps 1-6 of PPO seed 0): ~3 minutes
    python bench/judge_prompts.py --compare linears
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from common import REPO, table, write_result


def per_sample(model: Any, groups: list[Any], max_rows: int = 16, head: Any = None) -> list[list[torch.Tensor]]:
    """The previous path: every (question, response) as its own sequence."""
    from xrlhf.judge import scoring

    flat = scoring.tail_logprobs(model, [p + t for p, tails in groups for t in tails],
                                 [len(t) for _, tails in groups for t in tails], max_rows, head)
    return scoring._regroup(flat, groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--samples", default="docs/study/ppo-seed0/samples.jsonl")
    ap.add_argument("--compare", choices=["prompts", "linears"], default="prompts")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from xrlhf.config import load_config
    from xrlhf.judge import build_judge, likelihood

    cfg = load_config(REPO / "configs/study.yaml", ["judge.cache=false"])
    judge = build_judge(cfg.judge, cfg.model.name, cfg.model.cache_dir)
    rows = [json.loads(line) for line in (REPO / args.samples).read_text().splitlines()]
    steps = sorted({r["step"] for r in rows if r["step"] > 0})[:args.rounds]
    judge.score([rows[0]["prompt"]], [rows[0]["response"]])  # kernels, the instructions' cache
    grouped = likelihood.grouped_tail_logprobs
    tuned_cfg = judge.cfg
    if args.compare == "linears":  # (grouped path, tune_linears) per side
        sides = {"plain": (grouped, False), "tuned": (grouped, True)}
        for r in rows[:16]:  # measure the kernels and pack the weights at the judge's row counts before timing
            judge.score([r["prompt"]], [r["response"]])
    else:
        sides = {"grouped": (grouped, True), "per sample": (per_sample, True)}
    runs: dict[str, list[float]] = {k: [] for k in sides}
    diffs, shapes = [], []
    try:
        for rnd, step in enumerate(steps):
            batch = [r for r in rows if r["step"] == step]
            prompts, responses = [r["prompt"] for r in batch], [r["response"] for r in batch]
            shapes.append(f"{len(set(prompts))}x{len(batch) // max(len(set(prompts)), 1)}")
            rewards = {}
            for side in (list(sides) if rnd % 2 == 0 else list(sides)[::-1]):
                likelihood.grouped_tail_logprobs = sides[side][0]
                judge.cfg = tuned_cfg.model_copy(update={"tune_linears": sides[side][1]})
                c0 = time.thread_time()
                out = judge.score(prompts, responses)
                runs[side].append(time.thread_time() - c0)
                rewards[side] = [j.reward for j in out]
            diffs.append(max(abs(a - b) for a, b in zip(*rewards.values()) if a is not None and b is not None))
            print(f"  step {step} ({shapes[-1]}): " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items()),
                  flush=True)
    finally:
        likelihood.grouped_tail_logprobs = grouped
        judge.cfg = tuned_cfg
    before, after = list(sides)[::-1] if args.compare == "prompts" else list(sides)
    ratios = [b / a for a, b in zip(runs[after], runs[before])]
    result = {f"{before}_cpu_s": statistics.median(runs[before]), f"{after}_cpu_s": statistics.median(runs[after]),
              "speedup": statistics.median(runs[before]) / statistics.median(runs[after]),
              "speedup_min": min(ratios), "speedup_max": max(ratios), "max_reward_diff": max(diffs)}
    print(table([result], list(result)))
    out = {"rounds": len(steps), "samples": args.samples, "steps": steps, "batches": shapes, "threads": 1,
           "runs": runs, "result": result}
    print(f"wrote {write_result('judge_prompts' if args.compare == 'prompts' else 'judge_linears', out)}")


if __name__ == "__main__":
    main()
