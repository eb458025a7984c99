"""FLOPs utilisation per stage on gemma-3-270m: the stage's matmul FLOPs over its measured time, divided by the
fp32 matmul rate of this machine measured in the same run (probes interleaved with the stages).

FLOPs are counted from the model calls each stage actually makes (a forward pre-hook on the causal LM records
batch, new tokens, cached tokens and logits kept for every call, generate's steps included), with

    forward(B, n new tokens, c cached, k logit rows) = 2·N_body·B·n  +  2·N_head·B·k  +  attention
        N_body  = parameters of the decoder's linear layers (+ LoRA A/B where enabled), embeddings excluded
        N_head  = vocab × hidden (tied to the embedding; 168M of gemma's 268M parameters)
        attention = 4·B·layers·heads·head_dim·Σ_{i=1..n}(c + i)   (QKᵀ and PV, causal)
    LoRA forward + backward = 2 × forward (+ one more attention):
        the frozen weights get no weight gradient, so each frozen linear costs its forward matmul plus one
        matmul for the activation gradient (dX = dY·Wᵀ) — 2×, not the 3× of full fine-tuning (which also needs
        dW = Xᵀ·dY); LoRA's own A/B take all three but are 0.2% of N_body; attention backward is 2× its forward.
    full fine-tuning forward + backward = 3 × forward.

Time is the thread's CPU time (torch runs 1 thread here, in the caller), so other processes on the shared
cores slow both the stage and the matmul probe alike; wall time is recorded as context.

    python bench/limit.py               # quickstart shape, 1 round, 2-8 minutes on 2 shared cores (load-dependent)
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from common import Shape, table, train_prompts, write_result

SHAPE = Shape("gemma", prompts=4, samples=2, new_tokens=32)  # the quickstart's rollout batch
TARGET = 0.5  # forward-heavy stages: ≥ 50% of the measured matmul rate


def matmul_rate(n: int = 1024, m: int | None = None, k: int | None = None, reps: int = 5) -> float:
    """fp32 GFLOP/s of torch.mm [n,k]x[k,m], best of `reps`, by thread CPU time."""
    m, k = m or n, k or n
    a, b = torch.randn(n, k), torch.randn(k, m)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        c0 = time.thread_time()
        torch.mm(a, b)
        best = min(best, time.thread_time() - c0)
    return 2 * n * m * k / best / 1e9


STREAM_MIB = 512  # per array: far beyond any cache of this machine (L3 is tens of MB)


def memory_bandwidth(mib: int = STREAM_MIB, reps: int = 5) -> dict[str, float]:
    """GB/s of STREAM's copy (b = a: 2 arrays moved) and triad (a = b + s*c: 3) over fp32 arrays of `mib` MiB each,
    best of `reps`, wall time, in this process's torch threads: what the memory system delivers, independent of any
    xrlhf kernel. The physical leg of a roofline."""
    n = mib * 2**20 // 4
    a, b, c = torch.ones(n), torch.full((n,), 2.0), torch.full((n,), 0.5)
    out = {}
    for name, arrays, op in (("copy", 2, lambda: b.copy_(a)), ("triad", 3, lambda: torch.add(b, c, alpha=3.0, out=a))):
        op()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            op()
            best = min(best, time.perf_counter() - t0)
        out[name] = arrays * n * 4 / best / 1e9
    return out


def sgemm_rate(sizes: tuple[int, ...] = (512, 1024, 2048), reps: int = 5) -> float:
    """The best fp32 GFLOP/s of square torch.mm over `sizes` (MKL's sgemm on this CPU): the compute leg."""
    return max(matmul_rate(n, reps=reps) for n in sizes)


def stream_rate(rows: tuple[int, ...] = (1, 4), vocab: int = 262144, hidden: int = 640, reps: int = 5) -> float:
    """GB/s at which an fp32 matmul streams its weights: [r, hidden] by a [vocab, hidden] weight (the LM head's
    shape and layout) for each r in `rows`, the fastest of xrlhf.policy.generation's LINEAR_KERNELS (torch's linear,
    vocabulary blocks, the oneDNN-packed weight), best of `reps` each, by thread CPU time. This is xrlhf's own
    kernel, so it moves with the code; the physical limit is memory_bandwidth()."""
    from xrlhf.policy.generation import LINEAR_KERNELS

    w = torch.randn(vocab, hidden)
    best = float("inf")
    for r in rows:
        x = torch.randn(r, hidden)
        for kernel in LINEAR_KERNELS.values():
            kernel(x, w)
            for _ in range(reps):
                c0 = time.thread_time()
                kernel(x, w)
                best = min(best, time.thread_time() - c0)
    return w.numel() * w.element_size() / best / 1e9


class FlopCounter:
    """Counts the analytic FLOPs of every forward of a HF causal LM (see the module docstring)."""

    def __init__(self, model: Any):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = base.config
        self.layers, self.heads, self.head_dim = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
        self.n_head = cfg.vocab_size * cfg.hidden_size
        embed = base.get_input_embeddings().weight
        lm_head = base.get_output_embeddings().weight
        linear = sum(p.numel() for n, p in base.model.named_parameters()
                     if p.dim() == 2 and p is not embed and "lora_" not in n)
        lora = sum(p.numel() for n, p in base.named_parameters() if "lora_" in n)
        self.n_body, self.n_lora = linear, lora
        self.adapter_on = True
        self.calls: list[dict[str, int]] = []
        self.tied = lm_head.data_ptr() == embed.data_ptr()
        base.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        B, n = ids.shape
        att = kwargs.get("attention_mask")
        cached = (att.shape[1] - n) if att is not None else 0
        keep = kwargs.get("logits_to_keep", 0)
        k = n if (isinstance(keep, int) and keep == 0) else min(int(keep) if isinstance(keep, int) else len(keep), n)
        self.calls.append({"B": B, "n": n, "cached": cached, "k": k})

    def forward_flops(self, lora: bool = True) -> dict[str, float]:
        """FLOPs of the recorded calls, split into body matmuls, LM head and attention."""
        body = head = attn = 0.0
        params = self.n_body + (self.n_lora if lora else 0)
        for c in self.calls:
            B, n, cached, k = c["B"], c["n"], c["cached"], c["k"]
            body += 2 * params * B * n
            head += 2 * self.n_head * B * k
            keys = n * cached + n * (n + 1) / 2  # Σ_{i=1..n} (cached + i)
            attn += 4 * B * self.layers * self.heads * self.head_dim * keys
        return {"body": body, "head": head, "attention": attn, "total": body + head + attn,
                "tokens": sum(c["B"] * c["n"] for c in self.calls), "logit_rows": sum(c["B"] * c["k"] for c in self.calls),
                "calls": len(self.calls)}

    def roofline_seconds(self, gflops: float, gbps: float, lora: bool = True, bytes_per_param: int = 4,
                         calls: list[dict[str, int]] | None = None) -> float:
        """The least time the recorded calls can take on a machine that multiplies at `gflops` and streams weights
        at `gbps`: per call, the larger of its FLOPs over the rate and its weight bytes (every matmul weight read
        once per call: the body, and the head when a logit row is kept) over the stream rate. A decode step of a
        few rows is bound by the second, a prompt pass by the first. KV-cache reads are left out (a few MB here),
        so this is a bound, not a prediction."""
        params = self.n_body + (self.n_lora if lora else 0)
        total = 0.0
        for c in self.calls if calls is None else calls:
            B, n, cached, k = c["B"], c["n"], c["cached"], c["k"]
            flops = 2 * params * B * n + 2 * self.n_head * B * k
            flops += 4 * B * self.layers * self.heads * self.head_dim * (n * cached + n * (n + 1) / 2)
            weight_bytes = bytes_per_param * (params + (self.n_head if k else 0))
            total += max(flops / (gflops * 1e9), weight_bytes / (gbps * 1e9))
        return total

    def measure(self, fn: Any) -> tuple[Any, float, float, list[dict[str, int]]]:
        self.calls = []
        c0, t0 = time.thread_time(), time.perf_counter()
        out = fn()
        return out, time.thread_time() - c0, time.perf_counter() - t0, list(self.calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--judge", action="store_true", help="also the hf judge (expected mode) on the sampled batch")
    ap.add_argument("--probe", action="store_true",
                    help="only the physical limits: memory bandwidth (STREAM) and the best sgemm rate, 1 thread")
    args = ap.parse_args()
    torch.set_num_threads(1)  # each actor runs one torch thread here (resources.*.num_cpus 0.5)
    if args.probe:
        rounds = [{"bandwidth_gbps": memory_bandwidth(), "sgemm_gflops": {n: matmul_rate(n) for n in (512, 1024, 2048)}}
                  for _ in range(3)]
        out = {"command": "python bench/limit.py --probe", "threads": 1, "stream_mib_per_array": STREAM_MIB,
               "rounds": rounds, "copy_gbps": max(r["bandwidth_gbps"]["copy"] for r in rounds),
               "triad_gbps": max(r["bandwidth_gbps"]["triad"] for r in rounds),
               "sgemm_gflops": max(max(r["sgemm_gflops"].values()) for r in rounds)}
        print(f"memory bandwidth: copy {out['copy_gbps']:.1f} GB/s, triad {out['triad_gbps']:.1f} GB/s; "
              f"best sgemm {out['sgemm_gflops']:.1f} GFLOP/s (1 thread)")
        print(f"wrote {write_result('probe', out)}")
        return

    from xrlhf.learners import make_learner
    from xrlhf.policy.generation import sample

    from common import force_length, xrlhf_config

    cfg = xrlhf_config(SHAPE, "reinforce", judge="rule")
    learner = make_learner(cfg)
    tr = learner.trainer
    force_length(tr.model, SHAPE.new_tokens)
    counter = FlopCounter(tr.model)
    judge = None
    if args.judge:
        from xrlhf.judge import build_judge

        jcfg = xrlhf_config(SHAPE, "reinforce", judge="hf")
        judge = build_judge(jcfg.judge, jcfg.model.name, jcfg.model.cache_dir)
        judge_counter = FlopCounter(judge.model)
    prompts = train_prompts()
    r = cfg.rollout

    def probe() -> dict[str, float]:
        return {"square_1024": matmul_rate(1024), "stage_shaped": matmul_rate(SHAPE.batch * 96, 2048, 640)}

    # policy_forward: the no-grad policy pass PPO makes for its old values (REINFORCE has no such pass)
    stages: dict[str, list[dict[str, Any]]] = {k: [] for k in ("rollout", "reference", "policy_forward", "learner_update",
                                                               *(["judge"] if judge else []))}
    warm = sample(tr.model, tr.tokenizer, prompts[:1], 1, 2, seed=0)  # kernels and first-touch of the weights
    warm.ref_logprobs = tr.reference_logprobs(warm)
    probes = [probe()]
    for rnd in range(1, args.rounds + 1):
        batch = prompts[rnd * SHAPE.prompts:(rnd + 1) * SHAPE.prompts]
        exp, cpu, wall, calls = counter.measure(lambda: sample(
            tr.model, tr.tokenizer, batch, SHAPE.samples, SHAPE.new_tokens, r.temperature, r.top_p, r.top_k,
            seed=rnd, max_prompt_tokens=cfg.data.max_prompt_tokens))
        f = counter.forward_flops(lora=True)
        rec = {"rollout": (cpu, wall, f)}
        ref, cpu, wall, _ = counter.measure(lambda: tr.reference_logprobs(exp))
        rec["reference"] = (cpu, wall, counter.forward_flops(lora=False))
        exp.set_reference(ref, cfg.algorithm.kl_estimator)
        with torch.no_grad():
            _, cpu, wall, _ = counter.measure(lambda: tr.forward(exp))
        rec["policy_forward"] = (cpu, wall, counter.forward_flops(lora=True))
        if judge is not None:
            _, cpu, wall, _ = judge_counter.measure(lambda: judge.score(exp.prompts, exp.responses))
            rec["judge"] = (cpu, wall, judge_counter.forward_flops(lora=False))
        exp.rewards = torch.rand(SHAPE.batch)
        _, cpu, wall, _ = counter.measure(lambda: learner.update(exp))
        fwd = counter.forward_flops(lora=True)
        # LoRA: forward + activation-gradient backward = 2× forward, plus attention's second backward matmul
        upd = {k: (2 * v if k in ("body", "head") else 3 * v if k == "attention" else v) for k, v in fwd.items()}
        upd["total"] = upd["body"] + upd["head"] + upd["attention"]
        rec["learner_update"] = (cpu, wall, upd)
        probes.append(probe())
        for k, (cpu, wall, fl) in rec.items():
            stages[k].append({"cpu_s": cpu, "wall_s": wall, **{f"flops_{n}": v for n, v in fl.items()}})
        print(f"  round {rnd}: " + ", ".join(f"{k} {v[0]:.2f}s cpu" for k, v in rec.items()))

    peak = statistics.median(max(p.values()) for p in probes)
    rows = []
    for k, runs in stages.items():
        cpu = statistics.median(x["cpu_s"] for x in runs)
        flops = statistics.median(x["flops_total"] for x in runs)
        rate = flops / cpu / 1e9
        forward_heavy = k in ("reference", "policy_forward", "learner_update", "judge")
        rows.append({"stage": k, "cpu_s": cpu, "wall_s": statistics.median(x["wall_s"] for x in runs),
                     "GFLOP": flops / 1e9, "head_share": statistics.median(x["flops_head"] / x["flops_total"] for x in runs),
                     "GFLOP/s": rate, "utilisation": rate / peak, "forward_heavy": forward_heavy,
                     "target_met": (rate / peak >= TARGET) if forward_heavy else None,
                     "tokens": runs[0]["flops_tokens"], "logit_rows": runs[0]["flops_logit_rows"],
                     "model_calls": runs[0]["flops_calls"]})
    print(table(rows, ["stage", "cpu_s", "wall_s", "GFLOP", "head_share", "GFLOP/s", "utilisation", "target_met",
                       "tokens", "logit_rows", "model_calls"]))
    print(f"matmul rate (fp32, 1 thread, median of {len(probes)} probes, best shape): {peak:.1f} GFLOP/s")
    out = {"shape": SHAPE.__dict__, "threads": 1, "target": TARGET, "sequence_shape": list(exp.input_ids.shape),
           "params": {"N_body": counter.n_body, "N_lora": counter.n_lora, "N_head": counter.n_head,
                      "tied_head": counter.tied},
           "matmul_gflops_probes": probes, "matmul_gflops": peak, "stages": rows, "runs": stages}
    print(f"wrote {write_result('limit', out)}")


if __name__ == "__main__":
    main()
