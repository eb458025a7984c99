"""Step time of xrlhf (REINFORCE with the leave-one-out baseline, PPO) against TRL's RLOOTrainer and GRPOTrainer.

Equal work on both sides: the same model (the tiny random Llama, full weights; the packaged gemma-3-270m with
LoRA r=8 on q/k/v/o), the same prompts in the same order, the same batch (prompts × group), every response
exactly `new_tokens` long (min_new_tokens = max_new_tokens), the same reward (xrlhf's rule judge, wrapped as a
TRL reward function), fp32, no gradient checkpointing, one optimiser step per batch, KL coefficient 0.05 with
a reference pass. The steps interleave (xrlhf, TRL, xrlhf, TRL, ...) so the shared machine's load hits all alike.

xrlhf is measured twice: (a) in process, sample → reference → judge → learner.update with no Ray; (b) the full
Ray graph, `time/step` from metrics.jsonl of a short `xrlhf train` run (measured after (a), not interleaved).

    python bench/peer.py                      # tiny: REINFORCE, PPO vs RLOO, GRPO; in-process and Ray graph
    python bench/peer.py --models gemma       # gemma-3-270m: REINFORCE, PPO vs RLOO, 2 rounds
    python bench/peer.py --models gemma-study # gemma-3-270m at the study's step (4 prompts x 4 x 24 tokens): vs
                                              # RLOO and GRPO, 5 rounds (~12 minutes)
    (each under 10 minutes at a load average below about 6 on the 2 shared cores)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import (CONFIGS, RESULTS, Shape, XrlhfStep, has_hf_judge, interleave, run_xrlhf_train, summary, table,
                    train_prompts, write_result, xrlhf_config)

SHAPES = {"tiny": Shape("tiny", prompts=4, samples=4, new_tokens=12),
          "gemma": Shape("gemma", prompts=2, samples=2, new_tokens=16),
          "gemma-study": Shape("gemma", prompts=4, samples=4, new_tokens=24)}  # configs/study.yaml's step
ROUNDS = {"tiny": 8, "gemma": 2, "gemma-study": 5}
# GRPO's step is RLOO's but for the advantage; gemma steps are slow, so the small gemma shape runs RLOO only
PEERS = {"tiny": ["rloo", "grpo"], "gemma": ["rloo"], "gemma-study": ["rloo", "grpo"]}
RAY_STEPS = {"tiny": 4, "gemma": 0, "gemma-study": 0}
TARGET = 1.5  # xrlhf samples/s over the peer's


def compare(shape: Shape, rounds: int, threads: int, peers: list[str]) -> dict[str, Any]:
    """Build every runner for one model, interleave their steps, return timings per runner."""
    from trl_peer import TrlStep

    prompts = train_prompts()
    runners: dict[str, Any] = {}
    t0 = time.perf_counter()
    for alg in ("reinforce", "ppo"):
        runners[f"xrlhf-{alg}"] = XrlhfStep(xrlhf_config(shape, alg), prompts)
    judge = runners["xrlhf-reinforce"].judge
    cfg = runners["xrlhf-reinforce"].cfg
    # TRL is given one step more than is measured (the extra one never starts), so no end-of-training work
    # can fall into a measured step.
    for kind in peers:
        runners[f"trl-{kind}"] = TrlStep(kind, shape, cfg, prompts, judge, steps=rounds + 2, threads=threads)
    print(f"[{shape.model}] runners built in {time.perf_counter() - t0:.0f}s; {rounds} rounds + 1 warm-up")
    times = interleave(runners, rounds, warmup=1)
    return {"shape": shape.__dict__, "batch": shape.batch, "rounds": rounds,
            "sequence_shape": list(runners["xrlhf-reinforce"].last_shape),
            "steps": times, "runners": runners}


def head_rows(shape: Shape, sequence_shape: list[int]) -> dict[str, Any]:
    """Rows of the LM head (vocab x hidden matmul) per log-prob pass (reference, and the policy's forward).

    xrlhf asks the model for logits at the R positions that predict the response (logits_to_keep). TRL 1.16's
    fused LM head scores only the completion's positions on Triton devices (CUDA); elsewhere, CPU included, it scores
    every position, prompt included (trl/trainer/utils.py add_fused_lm_head: `compact = _use_triton(...)`).
    """
    B, T = sequence_shape
    R = shape.new_tokens
    return {"xrlhf": B * R, "trl_cpu": B * (T - 1), "trl_cuda": B * R, "T": T, "R": R}


def profile_step(step: XrlhfStep, top: int = 12) -> list[dict[str, Any]]:
    """torch.profiler's top operators by self CPU time over one xrlhf step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def ray_graph(shape: Shape, algorithm: str, steps: int) -> dict[str, Any]:
    """(b): a short `xrlhf train` of the same shape; the median time/step after the first step."""
    cfg_overrides = [f"steps={steps}", f"rollout.prompts_per_step={shape.prompts}",
                     f"rollout.samples_per_prompt={shape.samples}", f"rollout.max_new_tokens={shape.new_tokens}",
                     "judge.backend=rule", f"algorithm.name={algorithm}", "algorithm.ppo.epochs=1",
                     f"algorithm.ppo.minibatch_size={shape.batch}", f"checkpoint.every={steps}"]
    with tempfile.TemporaryDirectory(prefix="peer-ray-") as tmp:
        t0 = time.perf_counter()
        rows = run_xrlhf_train(CONFIGS[shape.model], cfg_overrides, Path(tmp) / "run")
        wall = time.perf_counter() - t0
    per_step = [r["time/step"] for r in rows[1:]]
    stages = {k: statistics.median(r[f"time/{k}"] for r in rows[1:])
              for k in ("rollout", "reference", "judge", "learner", "sync")}
    return {"algorithm": algorithm, "steps": steps, "wall_s": wall, "time_step": summary(per_step),
            "stages_median_s": stages, "response_length_mean": statistics.mean(r["response_length/mean"] for r in rows),
            "overrides": cfg_overrides}


def _keep_other_models(out: dict[str, Any], ours: list[str]) -> None:
    """Carry over the figures of models this run did not measure from bench/results/peer.json (read just now)."""
    previous = RESULTS / "peer.json"
    if previous.is_file():
        kept = json.loads(previous.read_text()).get("models", {})
        for m, r in kept.items():
            if m not in ours and "command" in r:
                out["models"][m] = r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny"], choices=list(SHAPES))
    ap.add_argument("--rounds", type=int, help="measured steps per runner (default: 6 tiny, 2 gemma)")
    ap.add_argument("--peers", nargs="+", choices=["rloo", "grpo"], help="default: rloo and grpo on tiny, rloo on gemma")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (xrlhf's actors use 1 each)")
    ap.add_argument("--ray-steps", type=int, help="steps of the `xrlhf train` run for (b), 0 skips it (default: 4 tiny, 0 gemma)")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"threads": args.threads, "target_ratio": TARGET, "models": {},
                           "judge": "rule (xrlhf.judge.rule.RuleJudge); xrlhf.judge.hf "
                                    + ("exists but is not used here" if has_hf_judge() else "does not exist yet")}
    rows = []
    for model in args.models:
        shape = SHAPES[model]
        peers = args.peers or PEERS[model]
        ray_steps = RAY_STEPS[model] if args.ray_steps is None else args.ray_steps
        res = compare(shape, args.rounds or ROUNDS[model], args.threads, peers)
        runners = res.pop("runners")
        med = {name: statistics.median(t["step"] for t in ts) for name, ts in res["steps"].items()}
        cpu = {name: statistics.median(t["step_cpu"] for t in ts) for name, ts in res["steps"].items()}
        res["median_step_s"], res["median_step_cpu_s"] = med, cpu
        res["samples_per_s"] = {name: shape.batch / s for name, s in med.items()}
        res["samples_per_cpu_s"] = {name: shape.batch / s for name, s in cpu.items()}
        res["stages_median_s"] = {name: {k: statistics.median(t[k] for t in ts) for k in ts[0]}
                                  for name, ts in res["steps"].items() if name.startswith("xrlhf")}
        res["lm_head_rows_per_pass"] = head_rows(shape, res["sequence_shape"])
        if not args.no_profile:
            res["profile_reinforce_top_ops"] = profile_step(runners["xrlhf-reinforce"])
        del runners
        if ray_steps:
            res["ray_graph"] = {alg: ray_graph(shape, alg, ray_steps) for alg in ("reinforce", "ppo")}
        ratios = {}
        for ours in ("xrlhf-reinforce", "xrlhf-ppo"):
            alg = ours.split("-")[1]
            ours_sps = {"in-process": res["samples_per_s"][ours]}
            if "ray_graph" in res:
                ours_sps["ray-graph"] = shape.batch / res["ray_graph"][alg]["time_step"]["median"]
            for how, sps in ours_sps.items():
                for peer in (f"trl-{p}" for p in peers):
                    ratio = sps / res["samples_per_s"][peer]
                    ratio_cpu = (res["samples_per_cpu_s"][ours] / res["samples_per_cpu_s"][peer]
                                 if how == "in-process" else None)
                    ratios[f"{ours} ({how}) / {peer}"] = {"wall": ratio, "cpu": ratio_cpu}
                    rows.append({"model": model, "xrlhf": f"{alg} {how}", "peer": peer,
                                 "xrlhf_step_s": shape.batch / sps, "peer_step_s": med[peer],
                                 "xrlhf_samples/s": sps, "peer_samples/s": res["samples_per_s"][peer],
                                 "ratio_wall": ratio, "ratio_cpu": ratio_cpu,
                                 "target_met": (ratio_cpu if ratio_cpu is not None else ratio) >= TARGET})
        res["ratios"] = ratios
        res["command"] = " ".join(["python", *sys.argv])
        res["finished"], res["loadavg_1_5_15"] = time.strftime("%Y-%m-%d %H:%M:%S"), list(os.getloadavg())
        out["models"][model] = res
        _keep_other_models(out, args.models)
        write_result("peer", out)  # after each model, so a later failure keeps the earlier numbers
    print()
    print(table(rows, ["model", "xrlhf", "peer", "xrlhf_step_s", "peer_step_s", "xrlhf_samples/s",
                       "peer_samples/s", "ratio_wall", "ratio_cpu", "target_met"]))
    for model, res in out["models"].items():
        print(f"\n[{model}] xrlhf in-process stage medians (s):")
        for name, st in res["stages_median_s"].items():
            print("  " + name + ": " + ", ".join(f"{k} {v:.3g}" for k, v in st.items()))
        for alg, rg in res.get("ray_graph", {}).items():
            print(f"  ray-graph {alg}: " + ", ".join(f"{k} {v:.3g}" for k, v in rg["stages_median_s"].items())
                  + f", step {rg['time_step']['median']:.3g} (mean response length {rg['response_length_mean']:.1f})")
        if "profile_reinforce_top_ops" in res:
            print(f"[{model}] top ops of one xrlhf REINFORCE step (torch.profiler, self CPU):")
            for op in res["profile_reinforce_top_ops"][:8]:
                print(f"  {op['share']:6.1%}  {op['self_s']:7.2f}s  {op['calls']:6d}  {op['op']}")
    _keep_other_models(out, args.models)
    print(f"\nwrote {write_result('peer', out)}")


if __name__ == "__main__":
    main()
