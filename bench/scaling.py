"""Throughput of the real Ray graph with 1 and 2 rollout actors and 1 and 2 judge actors (`rollout.num_actors`,
`judge.num_actors`), by default on the tiny model (configs/tiny.yaml with the hf judge on the same base model,
the reference colocated in the learner; `--model gemma` for the quickstart model, whose steps take minutes here),
then the step-time model of BENCHMARKS.md checked against the measured stage times.

The controller's step is sequential in phases: rollout (actors in parallel, each on its share of the prompts)
→ judge actors in parallel with the reference pass → learner update → weight sync. So

    T_step(N_r, N_j) ≈ T_rollout(1) / N_r  +  max(T_judge(1) / N_j, T_reference)  +  T_learner  +  T_sync

with T(1) the single-actor stage times (a stage's fixed per-call cost does not divide; on one machine two actors
also share its cores, so the division is by min(N, free cores)).

    python bench/scaling.py                    # tiny, 3 configurations × 3 steps, 3-8 minutes on 2 shared cores
    python bench/scaling.py --steps 4 --configs 1x1 2x1
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import CONFIGS, run_xrlhf_train_watched, table, write_result

SHAPES = {  # the hf judge on the policy's base model in both; gemma's steps take minutes on this machine
    "tiny": ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=16",
             "judge.backend=hf", "judge.max_response_tokens=64", "algorithm.name=reinforce"],
    "gemma": ["rollout.prompts_per_step=2", "rollout.samples_per_prompt=2", "rollout.max_new_tokens=16",
              "judge.max_response_tokens=64", "algorithm.name=reinforce"],
}
# reference_pass: the reference actor's own seconds (time/reference is when its result was collected, after the judges)
STAGES = ("rollout", "judge", "reference_pass", "learner", "sync")


def run(model: str, n_rollout: int, n_judge: int, steps: int) -> dict[str, Any]:
    overrides = [*SHAPES[model], f"steps={steps}", f"checkpoint.every={steps}", f"rollout.num_actors={n_rollout}",
                 f"judge.num_actors={n_judge}", "resources.num_cpus=2"]
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        t0 = time.perf_counter()
        rows, mem = run_xrlhf_train_watched(CONFIGS[model], overrides, Path(tmp) / "run")
        wall = time.perf_counter() - t0
    measured = rows[1:] or rows  # the first step warms caches up
    stages = {k: statistics.median(r[f"time/{k}"] for r in measured) for k in STAGES}
    step = statistics.median(r["time/step"] for r in measured)
    samples = _batch(overrides)
    return {"rollout_actors": n_rollout, "judge_actors": n_judge, "overrides": overrides, "wall_s": wall,
            "step_s": step, "samples_per_s": samples / step, "stages_median_s": stages,
            "steps": [{k: r[f"time/{k}"] for k in (*STAGES, "step")} for r in rows],
            "peak_rss_mib": {k: v.get("VmHWM") for k, v in mem.items()}}


def _batch(overrides: list[str]) -> int:
    kv = dict(o.split("=", 1) for o in overrides)
    return int(kv["rollout.prompts_per_step"]) * int(kv["rollout.samples_per_prompt"])


def predict(base: dict[str, float], n_rollout: int, n_judge: int, cores: float) -> float:
    """The step-time model from the single-actor stage times."""
    div_r, div_j = min(n_rollout, cores), min(n_judge, cores)
    judge_and_ref = max(base["judge"] / div_j, base["reference_pass"])
    return base["rollout"] / div_r + judge_and_ref + base["learner"] + base["sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"],
                    help="ROLLOUTxJUDGE actor counts; the first is the single-actor baseline")
    args = ap.parse_args()
    runs = []
    for c in args.configs:
        n_r, n_j = (int(x) for x in c.split("x"))
        print(f"  {n_r} rollout × {n_j} judge actors ...", flush=True)
        runs.append(run(args.model, n_r, n_j, args.steps))
        r = runs[-1]
        print(f"    step {r['step_s']:.2f}s, " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages_median_s"].items()),
              flush=True)
    base = runs[0]
    rows = []
    for r in runs:
        # the model from the single-actor configuration's stage times
        pred = predict(base["stages_median_s"], r["rollout_actors"], r["judge_actors"], cores=2)
        r["predicted_step_s"] = pred
        r["speedup_vs_base"] = base["step_s"] / r["step_s"]
        rows.append({"actors (rollout x judge)": f"{r['rollout_actors']} x {r['judge_actors']}", "step_s": r["step_s"],
                     "samples/s": r["samples_per_s"], "speedup": r["speedup_vs_base"], "predicted_step_s": pred,
                     **{f"{k}_s": v for k, v in r["stages_median_s"].items()}})
    print(table(rows, list(rows[0])))
    out = {"model": args.model, "config": str(CONFIGS[args.model].name), "shape_overrides": SHAPES[args.model], "runs": runs,
           "model_formula": "T_rollout/N_r + max(T_judge/N_j, T_reference_pass) + T_learner + T_sync"}
    print(f"wrote {write_result('scaling', out)}")


if __name__ == "__main__":
    main()
