"""The judge's CPU cost per study step, this checkout against another (by default the commit before issue 23's judge).

One side is a process that imports xrlhf from a checkout: this one, or a git worktree of --base (made under
/tmp, left there). Each process judges the study's steps 1..ROUNDS (16 committed samples each, PPO seed 0: the same
text on both sides) with the default judge (configs/study.yaml's: packaged gemma-3-270m, likelihood mode, guards
on, the judge's score cache off) in one torch thread, timing each step's judge.score in thread CPU seconds. The sides
run in the order A B, B A, ..., --pairs pairs, so drift on the machine hits both alike; the figure is the ratio of
the two sides' medians over all steps.

    python bench/judge_cost.py                 # 2 pairs (4 processes, ~6 minutes on 2 cores)
    python bench/judge_cost.py --base 11b0379 --pairs 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
BASE = "11b0379"  # main before the per-dimension signals


def side(samples: str, rounds: int) -> None:
    """Run in the child: judge each step, print one JSON line of per-step CPU seconds."""
    import torch

    import xrlhf
    from xrlhf.config import load_config
    from xrlhf.judge.hf import HFJudge

    torch.set_num_threads(1)
    rows = [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
    steps = sorted({r["step"] for r in rows if r["step"] > 0})[:rounds]
    study = load_config(str(REPO / "configs" / "study.yaml"))
    cfg = study.judge.model_copy(update={"cache": False})
    judge = HFJudge(cfg, cfg.model or study.model.name)
    out = []
    for step in steps:
        batch = [r for r in rows if r["step"] == step]
        t0 = time.thread_time()
        judge.score([r["prompt"] for r in batch], [r["response"] for r in batch])
        out.append(time.thread_time() - t0)
    print("RESULT " + json.dumps({"steps": steps, "cpu_s": out, "samples_per_step": len(batch),
                                  "xrlhf": str(Path(xrlhf.__file__).parent.parent)}))


def worktree(commit: str) -> Path:
    path = Path(f"/tmp/xrlhf-judge-cost-{commit}")
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True,
                       capture_output=True)
    return path


def run_side(checkout: Path, samples: str, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, str(HERE), "--side", "--samples", samples, "--rounds", str(rounds)],
                          env=env, cwd=checkout, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--samples", default=str(REPO / "docs" / "study" / "ppo-seed0" / "samples.jsonl"))
    ap.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        side(args.samples, args.rounds)
        return
    sides = {"now": REPO, "base": worktree(args.base)}
    times: dict[str, list[float]] = {"now": [], "base": []}
    for k in range(args.pairs):
        for name in ("now", "base") if k % 2 == 0 else ("base", "now"):
            got = run_side(sides[name], args.samples, args.rounds)
            assert Path(got["xrlhf"]) == sides[name], (name, got["xrlhf"])  # the side's own code
            times[name] += got["cpu_s"]
            print(f"pair {k + 1} {name}: " + " ".join(f"{t:.2f}" for t in got["cpu_s"]), flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    ratio = med["now"] / med["base"]
    print(f"judge CPU s per study step (median): now {med['now']:.2f}, base {args.base} {med['base']:.2f}; "
          f"ratio {ratio:.2f}")
    sys.path.insert(0, str(HERE.parent))
    from common import write_result

    print("wrote", write_result("judge_cost", {
        "command": " ".join(["python", "bench/judge_cost.py", *sys.argv[1:]]), "base": args.base,
        "samples": os.path.relpath(args.samples, REPO), "rounds_per_process": args.rounds, "pairs": args.pairs,
        "threads": 1, "cpu_s": times, "median_cpu_s": med, "ratio_now_to_base": ratio}))


if __name__ == "__main__":
    main()
