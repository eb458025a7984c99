"""Samples per hour of the study config, sequential vs pipelined (algorithm.async_steps), 1 vs 2 rollout actors.

Each configuration is a real `xrlhf train configs/study.yaml` (the Ray graph, packaged gemma-3-270m, the likelihood
judge) shortened by overrides, in a subprocess; the configurations alternate within each round, so load on the
shared machine hits all alike. Samples per hour = samples trained on / the run's training seconds (the sum of
time/step: validation, start-up and checkpoints left out, as in every progress axis of the report), and also
over the whole process's wall time. Validation is off. Every step is counted: pipelined, a step's time/step holds
the next step's gather, so only the sum over the whole run compares fairly with the sequential one.

    python bench/pipeline.py                          # 7 steps, 2 rounds of 4 configurations: ~35 min on 2 cores
    python bench/pipeline.py --steps 5 --rounds 1 --algorithm ppo
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, run_xrlhf_train, table, write_result

CONFIGS = {"sequential, 1 rollout": ["algorithm.async_steps=0", "rollout.num_actors=1"],
           "pipelined, 1 rollout": ["algorithm.async_steps=1", "rollout.num_actors=1"],
           "sequential, 2 rollouts": ["algorithm.async_steps=0", "rollout.num_actors=2"],
           "pipelined, 2 rollouts": ["algorithm.async_steps=1", "rollout.num_actors=2"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--algorithm", default="reinforce", choices=["reinforce", "ppo"])
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for name in args.configs:
                overrides = [f"steps={args.steps}", "eval.every_steps=0", "checkpoint.every=1000",
                             f"algorithm.name={args.algorithm}", "logging.wandb=false", *CONFIGS[name]]
                t0 = time.perf_counter()
                rows = run_xrlhf_train(REPO / "configs" / "study.yaml", overrides,
                                       Path(tmp) / f"{rnd}-{len(runs[name])}-{name.replace(' ', '')}", timeout_s=1500)
                wall = time.perf_counter() - t0
                samples, train_s = rows[-1]["progress/samples"], sum(r["time/step"] for r in rows)
                rec = {"samples_per_hour": 3600 * samples / train_s, "step_s": train_s / len(rows),
                       "process_samples_per_hour": 3600 * samples / wall,
                       "staleness": statistics.mean(r.get("async/staleness", 0) for r in rows)}
                runs[name].append(rec)
                print(f"round {rnd} {name}: {rec['samples_per_hour']:.0f} samples/h, {rec['step_s']:.1f} s/step",
                      flush=True)
    first = args.configs[0]
    base = statistics.median(r["samples_per_hour"] for r in runs[first])
    out = []
    for name, recs in runs.items():
        sph = [r["samples_per_hour"] for r in recs]
        out.append({"config": name, "samples/h": statistics.median(sph), "min": min(sph), "max": max(sph),
                    "s/step": statistics.median(r["step_s"] for r in recs),
                    "samples/h (process)": statistics.median(r["process_samples_per_hour"] for r in recs),
                    "staleness": statistics.median(r["staleness"] for r in recs),
                    f"vs {first}": statistics.median(sph) / base})
    print(table(out, list(out[0])))
    print(f"wrote {write_result('pipeline', {'algorithm': args.algorithm, 'steps': args.steps, 'rounds': runs, 'results': out})}")


if __name__ == "__main__":
    main()
