"""No wasted passes: each saving xrlhf makes against the obvious way, measured before/after on gemma-3-270m.

1. behaviour  Behaviour log-probs gathered from the logits `generate` already made (after) against sampling then a
              second no-grad forward pass over prompt + response (before). Time, interleaved; and how exact:
              the largest difference between the two at temperature 1 and 0.7, and with top-k/top-p the gap
              between the recorded log pi_T and the log-prob of the truncated distribution actually sampled.
2. logprobs   Peak memory of one reference pass (no grad) and of one learner pass (forward + backward, with the
              entropy metric REINFORCE logs) at the quickstart batch: logits for every position + one
              full-vocabulary log_softmax; logits only for the response (logits_to_keep) + full log_softmax;
              xrlhf before this benchmark (logits_to_keep, a temperature-scaled copy of all response logits even at
              T = 1, chunked logsumexp gather, entropy kept in the autograd graph); xrlhf now (temperature applied
              per chunk, entropy computed outside autograd). The peak is VmHWM after resetting it
              (/proc/self/clear_refs) with the model loaded and paged in.
5. prompts    A prompt's samples sharing its pass (its KV cache indexed out to them, the default) against one pass
              of prompt + response per row, at the study's batch (4 prompts x 4 samples x 24 tokens): reference
              (no grad) and learner (forward + backward) CPU seconds, interleaved, and the largest log-prob
              difference.
4. head       The LM head on the response positions as one contiguous matmul (positions passed to the model as a
              tensor) against transformers' strided `hidden[:, -k:]` slice, which runs as a broadcast bmm.
6. linears   The reference pass (no grad) with every linear layer running the product measured fastest for its
              shape (xrlhf.policy.generation.tuned_linears: oneDNN-packed weights among the candidates) against
              the layers' own forward, at the study's batch, interleaved, CPU seconds; the learner pass (forward +
              backward) beside it, which the tuning leaves to the layers' own forward (expected 1.0x).
3. reference  The reference as the policy's base weights with the LoRA adapter disabled (after) against a second
              copy of the base model (before): resident memory with the reference ready, pass time, and
              whether both give the same numbers.

Judge prefix sharing is measured by bench/judge.py (the judge's own benchmark).

    python bench/passes.py                 # all six, 5-12 minutes on 2 shared cores (load-dependent)
    python bench/passes.py --only logprobs
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from common import (RESULTS, Shape, load_gemma, peak_rss_mib, reset_peak_rss, run_part, table, train_prompts,
                    write_result)

SHAPE = Shape("gemma", prompts=4, samples=2, new_tokens=32)  # the quickstart's rollout batch
STUDY_SHAPE = Shape("gemma", prompts=4, samples=4, new_tokens=24)  # configs/study.yaml's
HERE = Path(__file__).resolve()


def _prompt_batch(tok: Any, shape: Shape, seed: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    from xrlhf.data import format_prompt

    prompts = train_prompts()[seed * shape.prompts:(seed + 1) * shape.prompts]
    texts = [format_prompt(tok, p) for p in prompts for _ in range(shape.samples)]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=128, add_special_tokens=False)
    return dict(enc), prompts


# ---------------------------------------------------------------- 1. behaviour log-probs

def behaviour(rounds: int) -> dict[str, Any]:
    """Sample with the kept logits (xrlhf.policy.generation.sample) vs generate + a second forward; same seed,
    same tokens."""
    from xrlhf.ops import response_logprobs
    from xrlhf.policy.generation import eos_ids, sample

    model, tok, cfg = load_gemma()
    S = SHAPE

    def after(seed: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> tuple[Any, float]:
        prompts = train_prompts()[seed * S.prompts:(seed + 1) * S.prompts]
        c0 = time.thread_time()
        exp = sample(model, tok, prompts, S.samples, S.new_tokens, temperature, top_p, top_k, seed=seed,
                     max_prompt_tokens=128)
        return exp, time.thread_time() - c0

    def before(seed: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """generate without logits, then response_logprobs: (tokens, logprobs, generate s, second-pass s)."""
        enc, _ = _prompt_batch(tok, S, seed)
        torch.manual_seed(seed)
        c0 = time.thread_time()
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                                 max_new_tokens=S.new_tokens, min_new_tokens=1, eos_token_id=eos_ids(model, tok),
                                 pad_token_id=tok.pad_token_id, return_dict_in_generate=True)
            c1 = time.thread_time()
            R = out.sequences.shape[1] - enc["input_ids"].shape[1]
            att = torch.cat([enc["attention_mask"], torch.ones(out.sequences.shape[0], R, dtype=torch.long)], 1)
            lp = response_logprobs(model, out.sequences, att, R, temperature=temperature).logprobs
        return out.sequences[:, enc["input_ids"].shape[1]:], lp, c1 - c0, time.thread_time() - c1

    def compare(exp: Any, temperature: float) -> dict[str, Any]:
        """The recorded behaviour log-probs against a second forward pass over the very same sequences."""
        with torch.no_grad():
            lp = response_logprobs(model, exp.input_ids, exp.attention_mask, exp.response_len,
                                   temperature=temperature).logprobs
        m = exp.response_mask.bool()
        diff = (exp.behaviour_logprobs - lp)[m].abs()
        return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "tokens": int(m.sum())}

    warm = sample(model, tok, train_prompts()[:1], 1, 2, seed=0)  # warm-up: kernels, first touch of the weights
    with torch.no_grad():
        response_logprobs(model, warm.input_ids, warm.attention_mask, warm.response_len)
    rows: dict[str, list[float]] = {"after_sample_with_logprobs": [], "before_generate": [],
                                    "before_second_pass": [], "before_total": []}
    exactness = []
    for r in range(rounds):
        exp, t_after = after(r)
        _, _, t_gen, t_pass = before(r)
        rows["after_sample_with_logprobs"].append(t_after)
        rows["before_generate"].append(t_gen)
        rows["before_second_pass"].append(t_pass)
        rows["before_total"].append(t_gen + t_pass)
        exactness.append(compare(exp, 1.0))
        print(f"  behaviour round {r}: after {t_after:.2f}s, before {t_gen:.2f}+{t_pass:.2f}s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in rows.items()}
    # temperature 0.7: generate's raw logits divided by T give log pi_T, the same as the second pass at T
    exp, _ = after(7, temperature=0.7)
    t07 = compare(exp, 0.7)
    # top-k / top-p: the recorded numbers are log pi_T (untruncated); the sampler drew from the truncated q
    trunc = _truncation_gap(model, tok, top_k=20, top_p=0.9)
    return {"shape": S.__dict__, "rounds": rounds, "cpu_seconds": rows, "median_cpu_s": med,
            "second_pass_share_of_before": med["before_second_pass"] / med["before_total"],
            "speedup_before_over_after": med["before_total"] / med["after_sample_with_logprobs"],
            "kept_logits_mib": S.batch * S.new_tokens * model.config.vocab_size * 4 / 2**20,
            "exact_t1": exactness, "exact_t07": t07, "truncation": trunc}


def _truncation_gap(model: Any, tok: Any, top_k: int, top_p: float) -> dict[str, Any]:
    """With top-k/top-p, log q(token) (truncated, renormalised: what was sampled) minus log pi_T (recorded)."""
    from xrlhf.policy.generation import eos_ids

    enc, _ = _prompt_batch(tok, SHAPE, 3)
    torch.manual_seed(3)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=top_p, top_k=top_k,
                             max_new_tokens=SHAPE.new_tokens, min_new_tokens=SHAPE.new_tokens,
                             eos_token_id=eos_ids(model, tok), pad_token_id=tok.pad_token_id,
                             return_dict_in_generate=True, output_logits=True, output_scores=True)
    P = enc["input_ids"].shape[1]
    gaps = []
    for t, (raw, scores) in enumerate(zip(out.logits, out.scores)):
        token = out.sequences[:, P + t:P + t + 1]
        log_pi = torch.log_softmax(raw.float(), -1).gather(-1, token)
        log_q = torch.log_softmax(scores.float(), -1).gather(-1, token)
        gaps.append((log_q - log_pi).squeeze(-1))
    gap = torch.stack(gaps)
    return {"top_k": top_k, "top_p": top_p, "mean_log_q_minus_log_pi": float(gap.mean()),
            "max_log_q_minus_log_pi": float(gap.max()), "tokens": gap.numel()}


# ---------------------------------------------------------------- 2. log-prob gather memory

def _touch(model: Any) -> None:
    """Page in every weight (safetensors loads them memory-mapped, resident only once read) and warm the kernels,
    so the peak measured next is the pass's own working memory."""
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
        model(input_ids=torch.tensor([[2, 10, 11]]), logits_to_keep=1)


# name -> (logits at every position?, how the log-probs are taken, entropy (learner only): with autograd?)
VARIANTS = {
    "all positions + full log_softmax": (False, "full", True),
    "logits_to_keep + full log_softmax": (True, "full", True),
    "logits_to_keep + scaled copy + chunked (xrlhf before)": (True, "old", True),
    "logits_to_keep + chunked, T per chunk (xrlhf after)": (True, "new", False),
}


def _gemma_and_batch(shape: Shape = SHAPE) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Gemma, and a batch of prompts (the quickstart's by default) with R random response tokens:
    (model, ids, mask, positions, R)."""
    torch.manual_seed(0)
    model, tok, _ = load_gemma()
    enc, _ = _prompt_batch(tok, shape, 0)
    R = shape.new_tokens
    ids = torch.cat([enc["input_ids"], torch.randint(10, 20000, (shape.batch, R))], 1)
    att = torch.cat([enc["attention_mask"], torch.ones(shape.batch, R, dtype=torch.long)], 1)
    return model, ids, att, (att.cumsum(-1) - 1).clamp(min=0), R


def logprobs_part(grad: bool) -> list[dict[str, Any]]:
    """Every variant in turn in this fresh process (MALLOC_MMAP_THRESHOLD_ set by the parent, so freed tensors
    go back to the OS); per variant the peak resident memory above the loaded model and batch.

    Reference mode: one no-grad pass. Learner mode: forward with grad, the entropy metric REINFORCE logs
    (with autograd, as the obvious way and xrlhf before keep it; outside it after), backward of the log-probs.
    """
    from xrlhf.ops import entropy_from_logits, gather_logprobs, response_logprobs

    model, ids, att, pos, R = _gemma_and_batch()
    tokens = ids[:, -R:]
    _touch(model)
    with torch.no_grad():
        check = gather_logprobs(model(input_ids=ids, attention_mask=att, position_ids=pos,
                                      logits_to_keep=R + 1).logits[:, -(R + 1):-1], tokens)
    rows = []
    for name, (keep, how, _) in VARIANTS.items():
        model.zero_grad(set_to_none=True)
        base = peak_rss_mib()["VmRSS"]
        assert reset_peak_rss(), "cannot reset VmHWM here"
        t0 = time.thread_time()
        with torch.set_grad_enabled(grad):
            if how == "new":
                fwd = response_logprobs(model, ids, att, R, return_entropy=grad, entropy_grad=False)
                lp = fwd.logprobs
            else:
                out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=R + 1 if keep else 0)
                logits = out.logits[:, -(R + 1):-1]
                if how == "full":
                    logp = torch.log_softmax(logits, -1)
                    lp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
                    if grad:  # the entropy metric, in the autograd graph
                        ent = -(logp.exp() * logp).sum(-1)
                else:  # xrlhf before: response_logprobs divided the logits by T, then gathered, then the entropy
                    scaled = logits / 1.0
                    lp = gather_logprobs(scaled, tokens)
                    if grad:
                        ent = entropy_from_logits(scaled)
            if grad:
                lp.sum().backward()
        seconds = time.thread_time() - t0
        peak = peak_rss_mib()["VmHWM"]
        rows.append({"variant": name, "pass": "learner fwd+bwd" if grad else "reference (no grad)",
                     "rss_before_mib": base, "peak_mib": peak, "peak_above_model_mib": peak - base, "cpu_s": seconds,
                     "max_abs_diff_vs_xrlhf": float((lp.detach() - check).abs().max()),
                     "sequence_shape": list(ids.shape), "vocab": model.config.vocab_size})
        print(f"  {rows[-1]['pass']}, {name}: peak +{peak - base:.0f} MiB", file=sys.stderr)
        del lp
        out = logits = logp = scaled = ent = fwd = None  # noqa: F841
    return rows


def logprobs(modes: list[bool]) -> dict[str, Any]:
    import os

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for grad in modes:
        rows += run_part(HERE, ["--part", "logprobs"] + (["--grad"] if grad else []), env=env)
    B, R = SHAPE.batch, SHAPE.new_tokens
    V, T = rows[0]["vocab"], rows[0]["sequence_shape"][1]
    return {"shape": SHAPE.__dict__, "rows": rows,
            "tensor_mib": {"logits_all_positions [B,T,V]": B * T * V * 4 / 2**20,
                           "logits_response [B,R+1,V]": B * (R + 1) * V * 4 / 2**20,
                           "log_softmax [B,R,V]": B * R * V * 4 / 2**20,
                           "one_chunk [4,R,V]": 4 * R * V * 4 / 2**20}}


# ---------------------------------------------------------------- 4. LM head on a contiguous slice

def _interleaved(model: Any, sides: dict[str, Any], rounds: int, alternate: bool) -> tuple[dict, dict, float]:
    """CPU seconds of each side's reference (no grad) and learner (grad) pass, interleaved per round (order swapped
    every other round when `alternate`): (times, medians, max |before - after|)."""
    times: dict[str, list[float]] = {}
    diff = 0.0
    for rnd in range(rounds):
        for grad in (False, True):
            got = {}
            names = list(sides) if not alternate or rnd % 2 == 0 else list(reversed(sides))
            for name in names:
                model.zero_grad(set_to_none=True)
                c0 = time.thread_time()
                got[name] = sides[name](grad)
                times.setdefault(f"{'learner' if grad else 'reference'} {name}", []).append(time.thread_time() - c0)
            diff = max(diff, float((got["before"] - got["after"]).abs().max()))
    return times, {k: statistics.median(v) for k, v in times.items()}, diff


def head(rounds: int) -> dict[str, Any]:
    """response_logprobs with logits_to_keep as the int R + 1 (transformers slices a strided view; the LM head runs
    as a broadcast bmm) against the position tensor xrlhf passes now (an indexed, contiguous copy; one mm).
    Reference pass (no grad) and learner pass (forward + backward), interleaved, CPU seconds."""
    from xrlhf.ops import gather_logprobs

    model, ids, att, pos, R = _gemma_and_batch()
    _touch(model)

    def before(grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=R + 1)
            lp = gather_logprobs(out.logits[:, -(R + 1):-1], ids[:, -R:])
            if grad:
                lp.sum().backward()
        return lp.detach()

    times, med, diff = _interleaved(model, {"before": before, "after": _pass(model, ids, att, R, share=False)}, rounds,
                                    alternate=False)
    print("  head: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()), file=sys.stderr)
    return {"shape": SHAPE.__dict__, "sequence_shape": list(ids.shape), "rounds": rounds, "cpu_seconds": times,
            "median_cpu_s": med, "max_abs_diff": diff,
            "speedup": {p: med[f"{p} before"] / med[f"{p} after"] for p in ("reference", "learner")}}


def _pass(model: Any, ids: torch.Tensor, att: torch.Tensor, R: int, share: bool) -> Any:
    """xrlhf's response_logprobs as a timed pass: no grad (the reference) or forward + backward (the learner)."""
    from xrlhf.ops import response_logprobs

    def fn(grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            lp = response_logprobs(model, ids, att, R, share_prompts=share).logprobs
            if grad:
                lp.sum().backward()
        return lp.detach()
    return fn


def prompts(rounds: int) -> dict[str, Any]:
    """response_logprobs with a prompt's samples sharing its pass (after) against one pass per row (before), at the
    study's batch. Reference pass (no grad) and learner pass (forward + backward), interleaved, CPU seconds."""
    model, ids, att, _, R = _gemma_and_batch(STUDY_SHAPE)
    _touch(model)

    times, med, diff = _interleaved(model, {"before": _pass(model, ids, att, R, share=False),
                                            "after": _pass(model, ids, att, R, share=True)}, rounds, alternate=True)
    print("  prompts: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()), file=sys.stderr)
    return {"shape": STUDY_SHAPE.__dict__, "sequence_shape": list(ids.shape), "rounds": rounds, "cpu_seconds": times,
            "median_cpu_s": med, "max_abs_diff": diff,
            "speedup": {p: med[f"{p} before"] / med[f"{p} after"] for p in ("reference", "learner")}}


def linears(rounds: int) -> dict[str, Any]:
    """The study batch's reference and learner passes with and without tuned_linears (kernels chosen and weights
    packed before the timed rounds), interleaved, CPU seconds."""
    from xrlhf.policy.generation import tuned_linears

    model, ids, att, _, R = _gemma_and_batch(STUDY_SHAPE)
    _touch(model)
    plain = _pass(model, ids, att, R, share=True)

    def tuned(grad: bool) -> torch.Tensor:
        with tuned_linears(model):
            return plain(grad)

    tuned(False)  # measure the kernels, pack the weights
    times, med, diff = _interleaved(model, {"before": plain, "after": tuned}, rounds, alternate=True)
    print("  linears: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()), file=sys.stderr)
    return {"shape": STUDY_SHAPE.__dict__, "sequence_shape": list(ids.shape), "rounds": rounds, "cpu_seconds": times,
            "median_cpu_s": med, "max_abs_diff": diff,
            "speedup": {p: med[f"{p} before"] / med[f"{p} after"] for p in ("reference", "learner")}}


# ---------------------------------------------------------------- 3. reference by disabled adapter

def reference_part(how: str) -> dict[str, Any]:
    """Load the policy and its reference `how` ('disabled-adapter' or 'second-copy'); RSS and one pass."""
    from xrlhf.ops import response_logprobs
    from xrlhf.policy.models import load_causal_lm, reference_mode

    rss0 = peak_rss_mib()["VmRSS"]
    torch.manual_seed(0)
    model, tok, cfg = load_gemma()
    with torch.no_grad():  # a trained adapter, so "adapter off" differs from the policy
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    _touch(model)
    rss_policy = peak_rss_mib()["VmRSS"]
    if how == "second-copy":
        ref, _ = load_causal_lm(cfg.model.name, cfg.model.dtype, cache_dir=cfg.model.cache_dir)
        ref.requires_grad_(False)
        _touch(ref)
    ready = peak_rss_mib()
    rss_ready = ready["VmRSS"]
    enc, _ = _prompt_batch(tok, SHAPE, 0)
    R = SHAPE.new_tokens
    ids = torch.cat([enc["input_ids"], torch.randint(10, 20000, (SHAPE.batch, R))], 1)
    att = torch.cat([enc["attention_mask"], torch.ones(SHAPE.batch, R, dtype=torch.long)], 1)
    times, lp = [], None
    for _ in range(2):
        t0 = time.thread_time()
        if how == "second-copy":
            with torch.no_grad():
                lp = response_logprobs(ref, ids, att, R).logprobs
        else:
            with reference_mode(model):
                lp = response_logprobs(model, ids, att, R).logprobs
        times.append(time.thread_time() - t0)
    with torch.no_grad():
        policy_lp = response_logprobs(model, ids, att, R).logprobs
    exact = None
    if how == "second-copy":  # the same numbers from the adapter switched off?
        with reference_mode(model):
            exact = float((response_logprobs(model, ids, att, R).logprobs - lp).abs().max())
    return {"how": how, "rss_start_mib": rss0, "rss_policy_mib": rss_policy, "rss_with_reference_mib": rss_ready,
            "reference_extra_mib": rss_ready - rss_policy, "anon_mib": ready["RssAnon"], "file_mib": ready["RssFile"],
            "reference_param_mib": (sum(p.numel() * p.element_size() for p in ref.parameters()) / 2**20
                                    if how == "second-copy" else 0.0),
            "peak_mib": peak_rss_mib()["VmHWM"],
            "pass_cpu_s": statistics.median(times), "lp": lp.tolist(),
            "policy_minus_reference_mean_abs": float((policy_lp - lp).abs().mean()),
            "max_abs_diff_adapter_off_vs_copy": exact}


def reference() -> dict[str, Any]:
    runs = {how: run_part(HERE, ["--part", "reference", "--how", how]) for how in ("second-copy", "disabled-adapter")}
    a, b = (torch.tensor(runs[h].pop("lp")) for h in ("second-copy", "disabled-adapter"))
    for how, r in runs.items():
        print(f"  reference by {how}: +{r['reference_extra_mib']:.0f} MiB, pass {r['pass_cpu_s']:.2f}s", file=sys.stderr)
    return {"runs": runs, "max_abs_diff_adapter_off_vs_copy": runs["second-copy"]["max_abs_diff_adapter_off_vs_copy"],
            "max_abs_diff_across_processes": float((a - b).abs().max()),
            "saved_mib": runs["second-copy"]["reference_extra_mib"] - runs["disabled-adapter"]["reference_extra_mib"]}


# ----------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=["behaviour", "logprobs", "head", "reference", "prompts", "linears"])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the behaviour timing")
    ap.add_argument("--no-grad-variants", action="store_true", help="skip the learner (forward+backward) variants")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--grad", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--how", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in the actors (resources.*.num_cpus 0.5 -> 1 thread)
    if args.part == "logprobs":
        print(json.dumps(logprobs_part(args.grad)))
        return
    if args.part == "reference":
        print(json.dumps(reference_part(args.how)))
        return
    parts = args.only or ["behaviour", "logprobs", "head", "prompts", "linears", "reference"]
    out: dict[str, Any] = {"threads": 1}
    previous = RESULTS / "passes.json"  # a run of some parts keeps the other parts' figures
    if previous.is_file():
        out.update({k: v for k, v in json.loads(previous.read_text()).items()
                    if k in ("behaviour", "logprobs", "head", "reference", "prompts", "linears") and k not in parts})
    if "behaviour" in parts:
        out["behaviour"] = behaviour(args.rounds)
        b = out["behaviour"]
        print(table([{"how": k, "cpu_s": v} for k, v in b["median_cpu_s"].items()], ["how", "cpu_s"]))
        print(f"before/after {b['speedup_before_over_after']:.2f}x; max |diff| T=1 "
              f"{max(e['max_abs_diff'] for e in b['exact_t1']):.2e}, T=0.7 {b['exact_t07']['max_abs_diff']:.2e}; "
              f"top-k/top-p gap mean {b['truncation']['mean_log_q_minus_log_pi']:.3f} nats")
        write_result("passes", out)
    if "logprobs" in parts:
        out["logprobs"] = logprobs([False] if args.no_grad_variants else [False, True])
        print(table(out["logprobs"]["rows"], ["variant", "pass", "rss_before_mib", "peak_mib", "peak_above_model_mib",
                                               "cpu_s", "max_abs_diff_vs_xrlhf"]))
        write_result("passes", out)
    if "head" in parts:
        out["head"] = head(args.rounds)
        print(f"LM head on a contiguous slice: {out['head']['speedup']} (before/after), max |diff| "
              f"{out['head']['max_abs_diff']:.1e}")
        write_result("passes", out)
    if "linears" in parts:
        out["linears"] = linears(args.rounds)
        print(f"tuned linear layers: {out['linears']['speedup']} (before/after), max |diff| "
              f"{out['linears']['max_abs_diff']:.1e}")
        write_result("passes", out)
    if "prompts" in parts:
        out["prompts"] = prompts(args.rounds)
        print(f"a prompt's pass shared by its samples: {out['prompts']['speedup']} (before/after), max |diff| "
              f"{out['prompts']['max_abs_diff']:.1e}")
        write_result("passes", out)
    if "reference" in parts:
        out["reference"] = reference()
        print(table(list(out["reference"]["runs"].values()),
                    ["how", "rss_policy_mib", "rss_with_reference_mib", "reference_extra_mib", "peak_mib",
                     "pass_cpu_s"]))
        print(f"saved {out['reference']['saved_mib']:.0f} MiB; max |diff| adapter-off vs copy "
              f"{out['reference']['max_abs_diff_adapter_off_vs_copy']:.2e}")
    print(f"wrote {write_result('passes', out)}")


if __name__ == "__main__":
    main()
