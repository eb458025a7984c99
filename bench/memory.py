"""Peak resident memory per actor of a quickstart run (gemma-3-270m policy with LoRA, the hf judge on the same base
model, the reference colocated in the learner with the adapter off), read from each Ray actor's /proc while a short
`xrlhf train configs/quickstart.yaml` runs.

Per actor: VmHWM (the kernel's peak resident set), and the largest RSS, anonymous RSS, file-backed RSS and PSS
seen while polling every 0.5 s. The model weights stay memory-mapped from the safetensors file (file-backed), so
the three processes holding gemma share one copy in the page cache: RSS counts it in each process, PSS divides it.

    python bench/memory.py                  # 1 step of the quickstart, 4-8 minutes on 2 shared cores
    python bench/memory.py --full-shape     # the quickstart's own batch (4 prompts × 2, 32 tokens)
    python bench/memory.py --untuned        # without the packed weights of tuned_linears, for the difference
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import CONFIGS, run_xrlhf_train_watched, table, write_result

SMALL = ["rollout.prompts_per_step=2", "rollout.max_new_tokens=16", "algorithm.ppo.minibatch_size=4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1, help="steps of the run (each runs every stage once)")
    ap.add_argument("--full-shape", action="store_true", help="the quickstart's batch instead of 2 prompts × 2, 16 tokens")
    ap.add_argument("--algorithm", default="reinforce", choices=["reinforce", "ppo"])
    ap.add_argument("--untuned", action="store_true",
                    help="model.tune_linears=false judge.tune_linears=false: no packed copies of the weights; written "
                         "to bench/results/memory_untuned.json")
    args = ap.parse_args()
    overrides = [f"steps={args.steps}", f"checkpoint.every={args.steps}", f"algorithm.name={args.algorithm}",
                 *([] if args.full_shape else SMALL),
                 *(["model.tune_linears=false", "judge.tune_linears=false"] if args.untuned else [])]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        rows, per_actor = run_xrlhf_train_watched(CONFIGS["gemma"], overrides, Path(tmp) / "run", timeout_s=900)
    table_rows: list[dict[str, Any]] = [{"process": k, **v} for k, v in per_actor.items()]
    actors = [r for r in table_rows if not r["process"].startswith("driver")]
    total = {"process": "all actors", **{k: sum(r.get(k, 0.0) for r in actors)
                                         for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "Pss")}}
    print(table(table_rows + [total], ["process", "VmHWM", "VmRSS", "RssAnon", "RssFile", "Pss"]))
    print("(MiB; VmHWM is the kernel's peak, the others the largest value seen while polling)")
    out = {"config": str(CONFIGS["gemma"].relative_to(CONFIGS["gemma"].parents[1])), "overrides": overrides,
           "per_process_mib": per_actor, "all_actors_mib": total,
           "step_times_s": [r["time/step"] for r in rows],
           "sequence": {"response_length_mean": [r["response_length/mean"] for r in rows]}}
    print(f"wrote {write_result('memory_untuned' if args.untuned else 'memory', out)}")


if __name__ == "__main__":
    main()
