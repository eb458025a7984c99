"""The HF rollout stage before and after sharing each prompt's pass among its samples and the in-place two-level
sampler, interleaved in one run on gemma-3-270m.

"before" is the previous xrlhf.policy.generation.sample, kept here as it was: a logits processor that draws by
inverse CDF over a full-vocabulary cumulative sum (fresh [B, V] buffers for the log-softmax, its exponential, the sum
and the one-hot answer every step), and generate running every prompt once per sample. "after" is sample as it is now
(the prompt pass once per prompt, its KV cache copied to the samples; the processor works in place and searches
blocks of the vocabulary; every linear layer of each decode step runs the product measured fastest for its shape
and row count, xrlhf.policy.generation.tuned_linears, the oneDNN-packed weights among them). "previous" is sample as it
was at commit 784f4ca: only the LM head tuned, among the unpacked products (PreviousHead below), so this session's
share of the gain is measured in the same run. Every kernel is chosen, and every weight packed, before the timed
runs. All sides
sample the same prompts with the same seed at the same lengths (every response forced to `new_tokens`), one thread, alternating A B / B A per round; time is the thread's CPU time, so other
processes on the shared cores slow both sides and the matmul probe alike.

One share of the matmul rate per side: "executed" is the analytic FLOPs each side ran (bench/limit.py's
FlopCounter) over its CPU time, round by round (each round's FLOPs over its own time; the median over rounds),
against the best sgemm rate probed in the same run (limit.sgemm_rate). Work a side skips (a prompt pass shared
among samples) is not counted as done. Log-probs are checked against a forward pass of what each side sampled.

The roofline columns bound what fp32 decoding can reach here: per model call, the larger of its FLOPs over the
sgemm rate and its weight bytes over the memory bandwidth (limit.memory_bandwidth: STREAM copy and triad over
512 MiB arrays, the larger; no xrlhf kernel in it), summed over the calls the "after" side made. A decode step of a
few rows reads every weight to do 2 FLOPs per weight per row, so it cannot run faster than that whatever the code:
"at roofline" is the bound's time over the measured time, round by round.

    python bench/rollout.py                      # 3 shapes x 2 rounds x 3 sides: ~12 min on 2 shared cores
"""
from __future__ import annotations

import argparse
import statistics
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch

from common import table, train_prompts, write_result
from limit import FlopCounter, matmul_rate, memory_bandwidth, sgemm_rate


SIDES = ("before", "previous", "after")  # "previous": only the LM head tuned, without the packed product


@contextmanager
def previous_head(model: Any) -> Iterator[None]:
    """The head tuning of commit 784f4ca: the LM head alone, the fastest of linear and the two blocked orders (each
    row count measured once, before the timed runs, by the same linear_kernel with the packed product left out)."""
    from xrlhf.policy import generation

    head = model.get_output_embeddings()
    unpacked = {k: v for k, v in generation.LINEAR_KERNELS.items() if k != "onednn_packed"}

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        x = hidden.reshape(-1, hidden.shape[-1])
        if not 0 < x.shape[0] <= generation.TUNED_ROWS:
            return torch.nn.functional.linear(hidden, head.weight)
        name = PREVIOUS_CHOICE.get(x.shape[0])
        if name is None:
            kernels, generation.LINEAR_KERNELS = generation.LINEAR_KERNELS, unpacked
            choice, generation._kernel_choice = generation._kernel_choice, {}
            try:
                name = PREVIOUS_CHOICE[x.shape[0]] = generation.linear_kernel(x.shape[0], head.weight)
            finally:
                generation.LINEAR_KERNELS, generation._kernel_choice = kernels, choice
        return unpacked[name](x.contiguous(), head.weight).view(*hidden.shape[:-1], head.weight.shape[0])

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


PREVIOUS_CHOICE: dict[int, str] = {}


class PreviousSampler:
    """The previous processor: log-softmax, its exponential and a full-vocabulary cumulative sum per step."""

    def __init__(self, stop_ids: list[int], min_new_tokens: int):
        self.stop_ids, self.min_new_tokens, self.logprobs = stop_ids, min_new_tokens, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        allowed = logp
        if len(self.logprobs) < self.min_new_tokens and self.stop_ids:
            allowed = logp.clone()
            allowed[:, self.stop_ids] = float("-inf")
        cdf = allowed.exp().cumsum(-1)
        u = torch.rand(cdf.shape[0], 1, dtype=cdf.dtype) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)
        self.logprobs.append(logp.gather(-1, token).squeeze(-1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


@torch.no_grad()
def before(model: Any, tok: Any, prompts: list[str], n: int, new_tokens: int, seed: int) -> tuple[Any, Any]:
    """The previous rollout (T = 1): every prompt run once per sample; (sequences [B, P+R], log-probs [B, R])."""
    from transformers import LogitsProcessorList

    from xrlhf.policy.generation import encode_prompts, eos_ids

    enc, _ = encode_prompts(tok, prompts, n, 512)
    torch.manual_seed(seed)
    stop = eos_ids(model, tok)
    sampler = PreviousSampler(stop, new_tokens)
    out = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=None, eos_token_id=stop,
                         pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
                         logits_processor=LogitsProcessorList([sampler]))
    return out.sequences, torch.stack(sampler.logprobs, dim=1)


@torch.no_grad()
def logprob_error(model: Any, sequences: torch.Tensor, logprobs: torch.Tensor, pad_id: int) -> float:
    """max |recorded log-prob - a forward pass's| over the sampled tokens, 4 rows at a time (memory)."""
    from xrlhf.ops import gather_logprobs

    R = logprobs.shape[1]
    mask = (sequences != pad_id).long()
    err = 0.0
    for i in range(0, sequences.shape[0], 4):
        logits = model(input_ids=sequences[i:i + 4], attention_mask=mask[i:i + 4], logits_to_keep=R + 1).logits
        ref = gather_logprobs(logits[:, :-1], sequences[i:i + 4, -R:])
        err = max(err, float((ref - logprobs[i:i + 4]).abs().max()))
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shapes", nargs="+", default=["4x2x32", "4x4x24", "8x4x32"],
                    help="PROMPTSxSAMPLESxTOKENS: the quickstart's rollout, the study's, a larger actor batch")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from xrlhf.policy.generation import sample
    from xrlhf.policy.models import load_causal_lm

    model, tok = load_causal_lm("packaged")
    counter = FlopCounter(model)
    prompts = train_prompts()
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for shape in args.shapes:  # kernels chosen and weights packed once per row count, outside the measured time
        n_prompts, n, _ = (int(x) for x in shape.split("x"))
        for rows in (n_prompts, n_prompts * n):
            sample(model, tok, prompts[:rows], 1, 2, seed=0)
            with previous_head(model):
                sample(model, tok, prompts[:rows], 1, 2, seed=0, tune_linears=False)
    print(f"  previous head kernels {PREVIOUS_CHOICE}", flush=True)
    probes = [sgemm_rate()]
    streams = [max(memory_bandwidth().values())]
    offset = 0
    for shape in args.shapes:
        n_prompts, n, new_tokens = (int(x) for x in shape.split("x"))
        for rnd in range(args.rounds):
            batch = prompts[offset:offset + n_prompts]
            offset += n_prompts
            seqs = {}
            for side in SIDES if rnd % 2 == 0 else SIDES[::-1]:
                if side == "before":
                    (s, lp), cpu, wall, calls = counter.measure(lambda: before(model, tok, batch, n, new_tokens, rnd))
                else:
                    with previous_head(model) if side == "previous" else nullcontext():
                        exp, cpu, wall, calls = counter.measure(lambda: sample(
                            model, tok, batch, n, new_tokens, seed=rnd, min_new_tokens=new_tokens,
                            tune_linears=side == "after"))
                    s, lp = exp.input_ids, exp.behaviour_logprobs
                flops = counter.forward_flops(lora=False)["total"]
                seqs[side] = s
                runs.setdefault((shape, side), []).append({
                    "cpu_s": cpu, "wall_s": wall, "gflop": flops / 1e9, "calls": calls,
                    "logprob_error": logprob_error(model, s, lp, tok.pad_token_id)})
            # the same seed draws the same tokens on both sides (both use one uniform number per row and step):
            # the share of rows whose whole response is the same
            same = (seqs["before"][:, -new_tokens:] == seqs["after"][:, -new_tokens:]).all(-1)
            runs.setdefault((shape, "same_tokens"), []).append(float(same.float().mean()))
            probes.append(sgemm_rate())
            streams.append(max(memory_bandwidth().values()))
            print(f"  {shape} round {rnd}: " + ", ".join(f"{side} {runs[(shape, side)][-1]['cpu_s']:.2f}s"
                                                          for side in SIDES), flush=True)
    peak, stream = statistics.median(probes), statistics.median(streams)
    rows = []
    for shape in args.shapes:
        med = {side: statistics.median(r["cpu_s"] for r in runs[(shape, side)]) for side in SIDES}
        prev_ratios = [u["cpu_s"] / a["cpu_s"] for u, a in zip(runs[(shape, "previous")], runs[(shape, "after")])]
        def executed(side: str) -> float:  # each round's FLOPs over its own time, then the median
            return statistics.median(r["gflop"] / r["cpu_s"] for r in runs[(shape, side)]) / peak

        roof = {side: [counter.roofline_seconds(peak, stream, lora=False, calls=r["calls"])
                       for r in runs[(shape, side)]] for side in SIDES}
        ratios = [b["cpu_s"] / a["cpu_s"] for b, a in zip(runs[(shape, "before")], runs[(shape, "after")])]
        rows.append({"shape": shape, "before_cpu_s": med["before"], "after_cpu_s": med["after"],
                     "speedup": med["before"] / med["after"], "speedup_min": min(ratios), "speedup_max": max(ratios),
                     "previous_cpu_s": med["previous"], "vs_previous": med["previous"] / med["after"],
                     "vs_previous_min": min(prev_ratios), "vs_previous_max": max(prev_ratios),
                     "executed_before": executed("before"), "executed_previous": executed("previous"),
                     "executed_after": executed("after"),
                     # the fp32 roofline: the least time these calls can take at the sgemm rate and the memory
                     # bandwidth, and how close the measured time comes to it, round by round
                     "roofline_after_s": statistics.median(roof["after"]),
                     "at_roofline_after": statistics.median(
                         b / r["cpu_s"] for b, r in zip(roof["after"], runs[(shape, "after")])),
                     "max_logprob_error": max(r["logprob_error"] for side in SIDES
                                              for r in runs[(shape, side)]),
                     "same_tokens": min(runs[(shape, "same_tokens")])})
    print(table(rows, list(rows[0])))
    print(f"sgemm rate (fp32, 1 thread, median of {len(probes)} probes): {peak:.1f} GFLOP/s; "
          f"memory bandwidth (STREAM, 512 MiB arrays) {stream:.2f} GB/s")
    for r in runs.values():
        for x in r if isinstance(r, list) else []:
            if isinstance(x, dict):
                x.pop("calls", None)
    out = {"rounds": args.rounds, "threads": 1, "matmul_gflops": peak, "probes": probes, "stream_gbps": stream,
           "stream_probes": streams, "results": rows,
           "runs": {f"{k[0]}-{k[1]}": v for k, v in runs.items()}}
    print(f"wrote {write_result('rollout', out)}")


if __name__ == "__main__":
    main()
