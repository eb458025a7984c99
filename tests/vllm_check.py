"""Checks VLLMSampler against transformers in one process; run with .venv-vllm/bin/python, prints a JSON summary.

tests/test_vllm_rollout.py runs this and asserts on the summary: the main environment has no vllm.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

# The engine in this process: each extra vLLM process re-imports vllm, about half a minute apiece on a busy CPU.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

PROMPTS = ["Name a colour.", "What is two plus two?", "Write one word about the sea.", "Say hello."]
SAMPLES_PER_PROMPT = 2
MAX_NEW_TOKENS = 16
MAX_PROMPT_TOKENS = 64
GREEDY_TOKENS = 8  # a decode step costs the same for 4 rows as for 8, so the greedy probe is kept short
TEMPERATURE = 0.8
SEED = 1234


def layout_problems(exp, stop_ids: list[int], pad_id: int, samples_per_prompt: int) -> list[str]:
    """What is wrong with an Experience's shapes and masks (empty when it matches generation.sample's layout)."""
    B, T = exp.input_ids.shape
    R = exp.response_len
    problems = []
    if exp.attention_mask.shape != (B, T) or exp.behaviour_logprobs.shape != (B, R):
        problems.append(f"shapes {tuple(exp.attention_mask.shape)} {tuple(exp.behaviour_logprobs.shape)}")
    if B != len(exp.prompts) or B != len(exp.responses) or B != len(exp.group_ids):
        problems.append("list lengths differ from the batch")
    if exp.group_ids != [i // samples_per_prompt for i in range(B)]:
        problems.append(f"group ids {exp.group_ids}")
    prompt_mask, response = exp.attention_mask[:, :T - R], exp.input_ids[:, T - R:]  # [B, P], [B, R]
    if not torch.all(prompt_mask[:, -1] == 1) or torch.any(prompt_mask.diff(dim=1) < 0):
        problems.append("prompt is not left-padded")
    mask = exp.response_mask
    if not torch.equal(exp.attention_mask[:, T - R:], mask):
        problems.append("attention mask over the response differs from response_mask")
    if torch.any(mask.diff(dim=1) > 0) or torch.any(mask[:, 0] != 1):
        problems.append("response_mask is not a prefix of ones")
    if torch.any(response[mask == 0] != pad_id) or torch.any(exp.behaviour_logprobs[mask == 0] != 0):
        problems.append("positions past the response are not padding")
    if torch.any(exp.behaviour_logprobs[mask == 1] > 0):
        problems.append("a behaviour log-prob is positive")
    for b in range(B):
        n = int(mask[b].sum())
        if n < R and int(response[b, n - 1]) not in stop_ids:
            problems.append(f"row {b} ends before R without a stop token")
    if R != int(mask.sum(1).max()):
        problems.append("R is longer than the longest response")
    return problems


def hf_logprobs(model, exp, temperature: float) -> torch.Tensor:
    """The adapter's log pi(a|s) at `temperature` for every response token, from a transformers forward.  # [B, R]"""
    from xrlhf.ops import response_logprobs

    with torch.no_grad():
        return response_logprobs(model, exp.input_ids, exp.attention_mask, exp.response_len, temperature).logprobs


def agreement(model, exp, temperature: float) -> dict[str, float]:
    diff = (hf_logprobs(model, exp, temperature) - exp.behaviour_logprobs).abs()[exp.response_mask.bool()]
    return {"mean_abs": round(diff.mean().item(), 4), "max_abs": round(diff.max().item(), 4), "tokens": diff.numel()}


@torch.no_grad()
def perturb_adapter(model, scale: float = 0.05, seed: int = 7) -> None:
    """A strong, seeded update: every LoRA B (zero at init) drawn from N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the JSON summary to this file")
    # float32 by default: on a CPU without AVX512-BF16 vLLM's bf16 is emulated and 3-4x slower, and float32
    # lets the agreement check be ~100x tighter. --dtype bfloat16 measures the GPU dtype's drift instead.
    parser.add_argument("--dtype", default="float32", help="vLLM's dtype; the transformers side is float32")
    args = parser.parse_args()
    from xrlhf.config import Config
    from xrlhf.policy.models import load_policy, trainable_state
    from xrlhf.policy.vllm_rollout import VLLMSampler

    t_start = time.perf_counter()
    # The defaults' adapter: peft LoRA r=8 on q/k/v/o_proj of the packaged gemma-3-270m.
    cfg = Config(model={"dtype": args.dtype}, data={"max_prompt_tokens": MAX_PROMPT_TOKENS},
                 rollout={"backend": "vllm", "max_new_tokens": MAX_NEW_TOKENS})
    t0 = time.perf_counter()
    sampler = VLLMSampler.from_config(cfg)  # what a rollout actor builds
    engine_start_s = time.perf_counter() - t0

    torch.manual_seed(0)
    model, _ = load_policy(cfg.model.model_copy(update={"dtype": "float32"}))
    model.eval()
    summary: dict = {"dtype": args.dtype, "engine_start_s": round(engine_start_s, 1)}
    tok, stop = sampler.tokenizer, sampler.stop_ids

    def draw(version: int, greedy: bool = False):
        t = time.perf_counter()
        n, tokens, temperature = (1, GREEDY_TOKENS, 0.0) if greedy else (SAMPLES_PER_PROMPT, MAX_NEW_TOKENS,
                                                                          TEMPERATURE)
        exp = sampler.sample(PROMPTS, n, tokens, temperature, seed=SEED, policy_version=version,
                             max_prompt_tokens=MAX_PROMPT_TOKENS)
        summary.setdefault("sample_s", []).append(round(time.perf_counter() - t, 2))
        return exp

    with tempfile.TemporaryDirectory() as folder:
        # Version 0 arrives as a folder written by PeftModel.save_pretrained (B = 0: the base model).
        model.save_pretrained(folder)
        sampler.set_adapter(folder, 0)
        exp0, greedy0 = draw(0), draw(0, greedy=True)
        summary["agreement_v0"] = agreement(model, exp0, TEMPERATURE)

    # Version 1 arrives as a state dict, as the learner sends it.
    perturb_adapter(model)
    sampler.set_adapter(trainable_state(model), 1)
    exp1, greedy1 = draw(1), draw(1, greedy=True)
    summary["agreement_v1"] = agreement(model, exp1, TEMPERATURE)
    summary["agreement_v1_greedy"] = agreement(model, greedy1, 1.0)
    # How far the update moved the version-0 samples' log-probs: had vLLM kept the old adapter,
    # agreement_v1 would be about this large rather than rounding-noise small.
    summary["update_shift"] = agreement(model, exp0, TEMPERATURE)

    try:
        sampler.sample(PROMPTS[:1], 1, 4, policy_version=0)
        summary["stale_version_refused"] = False
    except ValueError:
        summary["stale_version_refused"] = True
    summary["versions"] = [exp0.policy_version, greedy0.policy_version, exp1.policy_version, greedy1.policy_version]
    summary["greedy_changed_rows"] = sum(a != b for a, b in zip(greedy0.responses, greedy1.responses))
    summary["sampled_changed_rows"] = sum(a != b for a, b in zip(exp0.responses, exp1.responses))
    summary["layout_problems"] = [f"{name}: {p}" for name, exp, n in
                                  (("exp0", exp0, SAMPLES_PER_PROMPT), ("greedy0", greedy0, 1),
                                   ("exp1", exp1, SAMPLES_PER_PROMPT), ("greedy1", greedy1, 1))
                                  for p in layout_problems(exp, stop, tok.pad_token_id, n)]
    summary["shapes"] = {"input_ids": list(exp1.input_ids.shape), "response_mask": list(exp1.response_mask.shape)}
    summary["rows"] = exp1.input_ids.shape[0]
    summary["examples"] = {"v0": greedy0.responses[0], "v1": greedy1.responses[0]}
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    line = json.dumps(summary)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line)
    print(line)


if __name__ == "__main__":
    main()
