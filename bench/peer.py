"""Step time and counted work of xrlhf (REINFORCE with the leave-one-out baseline, PPO) against TRL's GRPOTrainer
(the headline: its passes match xrlhf's) and RLOOTrainer (one more no-grad policy forward, for old log-probs).

Equal work on both sides: the same model (the tiny random Llama, full weights; the packaged gemma-3-270m with
LoRA r=8 on q/k/v/o), the same prompts in the same order, the same batch (prompts × group), every response
exactly `new_tokens` long (min_new_tokens = max_new_tokens), the same reward (xrlhf's rule judge, wrapped as a
TRL reward function), fp32, no gradient checkpointing, one optimiser step per batch, KL coefficient 0.05 with
a reference pass. Whether the work is equal is measured, not assumed: hooks on every side's models
(bench/work_counter.py) count forward and backward passes, tokens, logit rows and FLOPs inside each timed step,
and bench/results/peer.json holds them beside the times, per round and per side.

Rounds: one warm-up, then `--rounds` measured (10 by default); each runs every side once, the order reversed every
other round (A B C D, D C B A, ...), so each side goes first as often as last. The prompts are single-turn prompts
of nearly one token length (those nearest the median), dealt so every round's batch has about the same mean
length; each round's prompt lengths are in the JSON.

xrlhf is measured twice: (a) in process, sample → reference → judge → learner.update with no Ray, interleaved
with TRL; (b) the full Ray graph, `time/step` from metrics.jsonl of a short `xrlhf train` of the same shape on the
bundled prompts (after (a), not interleaved, not counted; its responses may end early at EOS).

    python bench/peer.py                      # tiny: 10 rounds, in process and the Ray graph (~2 min)
    python bench/peer.py --models gemma-study # gemma-3-270m at the study's step (4 prompts x 4 x 24 tokens), 10
                                              # rounds and a 4-step Ray graph run (~40 min on a quiet machine)
    python bench/peer.py --models gemma       # gemma-3-270m, 2 prompts x 2 x 16 tokens, 10 rounds (~8 min)
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
from typing import Any, Callable

import torch

from common import (CONFIGS, RESULTS, Shape, XrlhfStep, has_hf_judge, run_xrlhf_train, summary, table,
                    train_prompts, write_result, xrlhf_config)
from work_counter import FIELDS, WorkCounter, trl_fused_head

SHAPES = {"tiny": Shape("tiny", prompts=4, samples=4, new_tokens=12),
          "gemma": Shape("gemma", prompts=2, samples=2, new_tokens=16),
          "gemma-study": Shape("gemma", prompts=4, samples=4, new_tokens=24)}  # configs/study.yaml's step
ROUNDS = 10
PEERS = ["grpo", "rloo"]
HEADLINE = ("xrlhf-reinforce", "trl-grpo")  # the matched pair: the same passes per step
RAY_STEPS = {"tiny": 4, "gemma": 0, "gemma-study": 4}


class CountedStep:
    """An in-process xrlhf step with its policy's and reference copy's work counted (as TrlStep counts TRL's)."""

    def __init__(self, step: XrlhfStep):
        self.step = step
        trainer = step.learner.trainer
        self.counter = WorkCounter([trainer.model, getattr(trainer, "reference", None)])

    def __call__(self) -> dict[str, Any]:
        before = self.counter.snapshot()
        t = self.step()
        return {**t, "work": self.counter.since(before)}


def balanced_prompts(tokenizer: Any, prompts: list[str], per_step: int, blocks: int) -> tuple[list[str], list[list[int]]]:
    """`blocks` batches of `per_step` single-turn prompts nearest the median token length, dealt in a snake
    (1 2 3 3 2 1 ...) so every batch's mean length is about the same; the flat list (batch i at [i·per_step, ...),
    as common.batch_prompts reads it) and each batch's prompt lengths in tokens."""
    from xrlhf.data import chat_turns, format_prompt

    single = [p for p in prompts if len(chat_turns(p)) == 1]  # TRL gets one user message: no multi-turn prompts
    special = not getattr(tokenizer, "chat_template", None)
    length = {p: len(tokenizer(format_prompt(tokenizer, p), add_special_tokens=special)["input_ids"]) for p in single}
    mid = statistics.median(length.values())
    chosen = sorted(sorted(single, key=lambda p: (abs(length[p] - mid), p))[:per_step * blocks], key=length.get)
    batches: list[list[str]] = [[] for _ in range(blocks)]
    for k, p in enumerate(chosen):
        lap, pos = divmod(k, blocks)
        batches[pos if lap % 2 == 0 else blocks - 1 - pos].append(p)
    return [p for b in batches for p in b], [[length[p] for p in b] for b in batches]


def interleave_balanced(runners: dict[str, Callable[[], dict[str, Any]]], rounds: int, warmup: int = 1
                        ) -> tuple[dict[str, list[dict[str, Any]]], list[list[str]]]:
    """Every runner once per round, the order reversed every other measured round (A B C D, D C B A, ...): each
    runner is first as often as last, so load that drifts within a round falls on all alike. The first `warmup`
    rounds run in the first order and are dropped. Returns the timings per runner and each measured round's order."""
    names = list(runners)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    orders = []
    for r in range(warmup + rounds):
        order = names if r < warmup or (r - warmup) % 2 == 0 else names[::-1]
        for name in order:
            t = runners[name]()
            w = t["work"]
            print(f"  round {r}{' (warm-up)' if r < warmup else ''} {name}: {t['step']:.2f}s (cpu {t['step_cpu']:.2f}s)"
                  f", {w['forward_passes']} fwd ({w['generate_passes']} in generate), {w['backward_passes']} bwd,"
                  f" {(w['flops_forward'] + w['flops_backward']) / 1e9:.2f} GFLOP", flush=True)
            if r >= warmup:
                out[name].append(t)
        if r >= warmup:
            orders.append(order)
    return out, orders


def compare(shape: Shape, rounds: int, threads: int, peers: list[str]) -> dict[str, Any]:
    """Build every runner for one model, interleave their counted steps, return timings and work per runner."""
    from trl_peer import TrlStep

    runners: dict[str, Any] = {}
    t0 = time.perf_counter()
    for alg in ("reinforce", "ppo"):
        runners[f"xrlhf-{alg}"] = CountedStep(XrlhfStep(xrlhf_config(shape, alg), []))
    first = runners["xrlhf-reinforce"].step
    # TRL is given one step more than is measured (the extra one never starts), so no end-of-training work
    # can fall into a measured step; every side reads the same batches in the same order.
    prompts, lengths = balanced_prompts(first.learner.trainer.tokenizer, train_prompts(), shape.prompts, rounds + 2)
    for r in runners.values():
        r.step.prompts = prompts
    for kind in peers:
        runners[f"trl-{kind}"] = TrlStep(kind, shape, first.cfg, prompts, first.judge, steps=rounds + 2,
                                         threads=threads)
    print(f"[{shape.model}] runners built in {time.perf_counter() - t0:.0f}s; {rounds} rounds + 1 warm-up")
    with trl_fused_head():
        times, orders = interleave_balanced(runners, rounds, warmup=1)
    return {"shape": shape.__dict__, "batch": shape.batch, "rounds": rounds,
            "sequence_shape": list(first.last_shape), "prompt_tokens_per_round": lengths[1:rounds + 1],
            "orders": orders, "steps": times, "runners": runners,
            "models_counted": {name: r.counter.models for name, r in runners.items()}}


def work_summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step work of one runner: each counter's median over the rounds, and the FLOPs' range."""
    med = {k: statistics.median(t["work"][k] for t in steps) for k in FIELDS}
    flops = [t["work"]["flops_forward"] + t["work"]["flops_backward"] for t in steps]
    return {**med, "gflop": statistics.median(flops) / 1e9, "gflop_min": min(flops) / 1e9,
            "gflop_max": max(flops) / 1e9}


def pair_ratios(ours: list[dict[str, Any]], peer: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round ratios of a pair (same round, same prompts): peer over ours in CPU seconds, wall seconds and counted
    FLOPs, and the FLOP rate (ours over the peer's: the CPU ratio at equal counted work)."""
    def flops(t: dict[str, Any]) -> int:
        return t["work"]["flops_forward"] + t["work"]["flops_backward"]

    cpu = [p["step_cpu"] / o["step_cpu"] for o, p in zip(ours, peer)]
    fl = [flops(p) / flops(o) for o, p in zip(ours, peer)]
    return {"cpu": summary(cpu), "wall": summary([p["step"] / o["step"] for o, p in zip(ours, peer)]),
            "flops": summary(fl), "flop_rate": summary([c / f for c, f in zip(cpu, fl)]),
            "cpu_per_round": cpu, "flops_per_round": fl}


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
                if "headline" not in r:
                    r["note"] = ("measured before the work counter, the counterbalanced rounds and the balanced "
                                 "prompts (issue 27): not quoted")
                out["models"][m] = r


def summarise(res: dict[str, Any], shape: Shape) -> None:
    """Medians, per-step work, per-round pair ratios, the headline and RLOO's extra pass, into `res`."""
    steps = res["steps"]
    res["median_step_s"] = {n: statistics.median(t["step"] for t in ts) for n, ts in steps.items()}
    res["median_step_cpu_s"] = {n: statistics.median(t["step_cpu"] for t in ts) for n, ts in steps.items()}
    res["samples_per_s"] = {n: shape.batch / s for n, s in res["median_step_s"].items()}
    res["stages_median_s"] = {n: {k: statistics.median(t[k] for t in ts) for k in ts[0] if k != "work"}
                              for n, ts in steps.items() if n.startswith("xrlhf")}
    res["work_per_step"] = {n: work_summary(ts) for n, ts in steps.items()}
    res["ratios"] = {f"{ours} (in-process) / {peer}": pair_ratios(steps[ours], steps[peer])
                     for ours in steps if ours.startswith("xrlhf") for peer in steps if peer.startswith("trl")}
    ours, peer = HEADLINE
    if peer in steps:
        r = res["ratios"][f"{ours} (in-process) / {peer}"]
        res["headline"] = {"pair": f"{ours} / {peer}", "cpu_ratio": r["cpu"]["median"],
                           "cpu_ratio_range": [r["cpu"]["min"], r["cpu"]["max"]], "flops_ratio": r["flops"]["median"],
                           "flop_rate_ratio": r["flop_rate"]["median"]}
    if "trl-grpo" in steps and "trl-rloo" in steps:
        g, o = res["work_per_step"]["trl-grpo"], res["work_per_step"]["trl-rloo"]
        res["trl_rloo_extra_over_grpo"] = {k: o[k] - g[k] for k in ("forward_passes", "forward_passes_grad",
                                                                      "backward_passes", "tokens", "logit_rows",
                                                                      "flops_forward", "flops_backward")}
    for alg, rg in res.get("ray_graph", {}).items():
        for p in (n for n in steps if n.startswith("trl")):
            res["ratios"][f"xrlhf-{alg} (ray-graph, wall, not interleaved) / {p}"] = {
                "wall": res["median_step_s"][p] / rg["time_step"]["median"]}


def report(model: str, res: dict[str, Any]) -> None:
    """The tables a person reads: work per step per side, the pair ratios, the headline."""
    cols = ["forward_passes", "forward_passes_grad", "generate_passes", "backward_passes", "tokens", "logit_rows",
            "logit_rows_grad", "gflop"]
    print(f"\n[{model}] counted work per step (median over rounds):")
    print(table([{"side": n, **{c: w[c] for c in cols}} for n, w in res["work_per_step"].items()], ["side", *cols]))
    rows = [{"pair": k, "cpu": v["cpu"]["median"], "cpu_min": v["cpu"]["min"], "cpu_max": v["cpu"]["max"],
             "flops": v["flops"]["median"], "flop_rate": v["flop_rate"]["median"]}
            for k, v in res["ratios"].items() if "cpu" in v]
    print(table(rows, ["pair", "cpu", "cpu_min", "cpu_max", "flops", "flop_rate"]))
    if "headline" in res:
        h = res["headline"]
        print(f"headline {h['pair']}: {h['cpu_ratio']:.2f}x CPU (rounds {h['cpu_ratio_range'][0]:.2f}-"
              f"{h['cpu_ratio_range'][1]:.2f}), counted FLOPs {h['flops_ratio']:.2f}x, FLOP rate {h['flop_rate_ratio']:.2f}x")
    if "trl_rloo_extra_over_grpo" in res:
        print(f"TRL RLOO over GRPO per step: {res['trl_rloo_extra_over_grpo']}")
    for alg, rg in res.get("ray_graph", {}).items():
        print(f"  ray-graph {alg}: " + ", ".join(f"{k} {v:.3g}" for k, v in rg["stages_median_s"].items())
              + f", step {rg['time_step']['median']:.3g} (mean response length {rg['response_length_mean']:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny"], choices=list(SHAPES))
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"measured rounds (default {ROUNDS})")
    ap.add_argument("--peers", nargs="+", choices=PEERS, default=PEERS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (xrlhf's actors use 1 each)")
    ap.add_argument("--ray-steps", type=int, help="steps of the `xrlhf train` run for (b), 0 skips it "
                                                  "(default: 4; 0 at the small gemma shape)")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"threads": args.threads, "models": {},
                           "work_counter": "bench/work_counter.py (forward/backward hooks; FLOP formula there)",
                           "judge": "rule (xrlhf.judge.rule.RuleJudge); xrlhf.judge.hf "
                                    + ("exists but is not used here" if has_hf_judge() else "does not exist yet")}
    for model in args.models:
        shape = SHAPES[model]
        ray_steps = RAY_STEPS[model] if args.ray_steps is None else args.ray_steps
        res = compare(shape, args.rounds, args.threads, args.peers)
        runners = res.pop("runners")
        if not args.no_profile:
            res["profile_reinforce_top_ops"] = profile_step(runners["xrlhf-reinforce"].step)
        for r in runners.values():
            r.counter.close()
        del runners
        if ray_steps:
            res["ray_graph"] = {alg: ray_graph(shape, alg, ray_steps) for alg in ("reinforce", "ppo")}
        summarise(res, shape)
        res["command"] = " ".join(["python", *sys.argv])
        res["finished"], res["loadavg_1_5_15"] = time.strftime("%Y-%m-%d %H:%M:%S"), list(os.getloadavg())
        out["models"][model] = res
        _keep_other_models(out, args.models)
        write_result("peer", out)  # after each model, so a later failure keeps the earlier numbers
        report(model, res)
    _keep_other_models(out, args.models)
    print(f"\nwrote {write_result('peer', out)}")


if __name__ == "__main__":
    main()
