"""The HF rollout stage before and after the inverse-CDF sampler, interleaved in one run on gemma-3-270m.

"before" is generate's own sampling (do_sample=True: torch.multinomial, which draws one exponential variate per
vocabulary entry per row and step) with the behaviour log-probs gathered from the logits it kept; "after" is
xrlhf.generation.sample as it is now (a logits processor draws by inverse CDF and records the log-probs; generate
runs its greedy path). Both sample the same prompts at the same lengths (every response forced to `new_tokens`),
one torch thread, alternating per round; time is the thread's CPU time, so other processes on the shared cores
slow both sides and the matmul probe alike. Utilisation is the stage's analytic matmul FLOPs (bench/limit.py's
FlopCounter) over its CPU time, divided by the fp32 matmul rate measured in the same run.

    python bench/rollout.py                      # 8 and 32 rows x 32 tokens, 3 rounds: ~6 min on 2 shared cores
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from common import Shape, table, train_prompts, write_result
from limit import FlopCounter, matmul_rate


@torch.no_grad()
def before(model: Any, tok: Any, prompts: list[str], n: int, new_tokens: int, seed: int) -> torch.Tensor:
    """The previous rollout: generate samples (multinomial), log-probs gathered from the kept logits."""
    from xrlhf.data import format_prompt
    from xrlhf.generation import eos_ids

    texts = [format_prompt(tok, p) for p in prompts for _ in range(n)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not getattr(tok, "chat_template", None))
    torch.manual_seed(seed)
    out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, eos_token_id=eos_ids(model, tok), pad_token_id=tok.pad_token_id,
                         return_dict_in_generate=True, output_logits=True)
    response = out.sequences[:, enc["input_ids"].shape[1]:]
    logprobs = torch.empty(response.shape)
    for t, step_logits in enumerate(out.logits[:response.shape[1]]):
        scaled = step_logits.float()
        logprobs[:, t] = scaled.gather(-1, response[:, t:t + 1]).squeeze(-1) - torch.logsumexp(scaled, -1)
    return logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from xrlhf.experience import gather_logprobs
    from xrlhf.generation import sample
    from xrlhf.models import load_causal_lm

    model, tok = load_causal_lm("packaged")
    counter = FlopCounter(model)
    prompts = train_prompts()
    sample(model, tok, prompts[:1], 1, 2, seed=0)  # kernels and first-touch of the weights
    rows, runs, probes = [], {}, [matmul_rate(1024)]
    for n_rows in args.rows:
        shape = Shape("gemma", prompts=n_rows // 2, samples=2, new_tokens=args.new_tokens)
        for rnd in range(args.rounds):
            batch = prompts[rnd * shape.prompts:(rnd + 1) * shape.prompts]
            for side in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
                if side == "before":
                    _, cpu, wall, _ = counter.measure(lambda: before(model, tok, batch, 2, args.new_tokens, rnd))
                else:
                    exp, cpu, wall, _ = counter.measure(lambda: sample(
                        model, tok, batch, 2, args.new_tokens, seed=rnd, max_prompt_tokens=512,
                        min_new_tokens=args.new_tokens))
                flops = counter.forward_flops(lora=False)["total"]
                runs.setdefault((n_rows, side), []).append({"cpu_s": cpu, "wall_s": wall, "gflop": flops / 1e9})
            # the new path's log-probs against a forward pass of what it sampled, 4 rows at a time (memory)
            R = exp.response_mask.shape[1]
            err = 0.0
            with torch.no_grad():
                for i in range(0, exp.input_ids.shape[0], 4):
                    logits = model(input_ids=exp.input_ids[i:i + 4], attention_mask=exp.attention_mask[i:i + 4],
                                   logits_to_keep=R + 1).logits
                    ref = gather_logprobs(logits[:, :-1], exp.input_ids[i:i + 4, -R:])
                    m = exp.response_mask[i:i + 4].bool()
                    err = max(err, float((ref[m] - exp.behaviour_logprobs[i:i + 4][m]).abs().max()))
            runs.setdefault((n_rows, "logprob_error"), []).append(err)
            probes.append(matmul_rate(1024))
            print(f"  rows {n_rows} round {rnd}: " + ", ".join(f"{s} {runs[(n_rows, s)][-1]['cpu_s']:.2f}s"
                                                                for s in ("before", "after")))
    peak = statistics.median(probes)
    for n_rows in args.rows:
        med = {s: statistics.median(r["cpu_s"] for r in runs[(n_rows, s)]) for s in ("before", "after")}
        gflop = runs[(n_rows, "after")][0]["gflop"]
        rows.append({"rows": n_rows, "tokens": args.new_tokens, "before_cpu_s": med["before"],
                     "after_cpu_s": med["after"], "speedup": med["before"] / med["after"],
                     "util_before": gflop / med["before"] / peak, "util_after": gflop / med["after"] / peak,
                     "max_logprob_error": max(runs[(n_rows, "logprob_error")])})
    print(table(rows, list(rows[0])))
    print(f"matmul rate (fp32, 1 thread, median of {len(probes)} probes): {peak:.1f} GFLOP/s")
    out = {"rounds": args.rounds, "threads": 1, "matmul_gflops": peak, "probes": probes, "results": rows,
           "runs": {f"{k[0]}-{k[1]}": v for k, v in runs.items()}}
    print(f"wrote {write_result('rollout', out)}")


if __name__ == "__main__":
    main()
