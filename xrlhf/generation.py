"""Sampling with transformers `generate`, keeping the behaviour log-probabilities it already computed."""
from __future__ import annotations

from typing import Any

import torch

from xrlhf.data import format_prompt
from xrlhf.experience import Experience


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a response (gemma's chat turn end as well as the plain EOS)."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def response_mask_from(tokens: torch.Tensor, stop_ids: list[int], pad_id: int) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it.  # [B, R]"""
    is_stop = torch.zeros_like(tokens, dtype=torch.bool)
    for sid in stop_ids:
        is_stop |= tokens == sid
    # positions strictly after the first stop token are padding
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0
    return (~after_stop).long()


def draw(logp: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row from exp(logp) (optionally top-k / nucleus truncated), by inverse CDF.  # [B, V] -> [B, 1]

    One uniform number per row and a cumulative sum: torch.multinomial, which generate uses, draws an
    exponential variate for every vocabulary entry (262k for gemma), 14% of a CPU rollout's time.
    """
    probs = logp.exp()
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each entry
        sorted_p = torch.where(before < top_p * sorted_p.sum(-1, keepdim=True), sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)


class _Sampler:
    """A logits processor that samples the next token itself and hands generate a one-hot choice (generate runs
    greedy and takes it). It records pi's log-prob of the token (softmax of logits / T, before truncation and
    before the end-of-response mask of the first min_new_tokens steps), which is what PPO's ratio needs."""

    def __init__(self, temperature: float, top_p: float, top_k: int, stop_ids: list[int], min_new_tokens: int = 1):
        self.temperature, self.top_p, self.top_k, self.stop_ids = temperature, top_p, top_k, stop_ids
        self.min_new_tokens = min_new_tokens
        self.logprobs: list[torch.Tensor] = []  # one [B] per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)  # [B, V]
        allowed = logp
        if len(self.logprobs) < self.min_new_tokens and self.stop_ids:  # no stop before min_new_tokens
            allowed = logp.clone()
            allowed[:, self.stop_ids] = float("-inf")
        token = draw(allowed, self.top_p, self.top_k)  # [B, 1]
        self.logprobs.append(logp.gather(-1, token).squeeze(-1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


def encode_prompts(tokenizer: Any, prompts: list[str], samples_per_prompt: int,
                   max_prompt_tokens: int) -> tuple[Any, list[int]]:
    """Each prompt samples_per_prompt times as the policy sees it (format_prompt), tokenized to padded tensors of
    at most max_prompt_tokens, with each row's group id (its prompt's index). A chat template already holds the
    special tokens, so the tokenizer adds them only without one."""
    texts = [format_prompt(tokenizer, p) for p in prompts for _ in range(samples_per_prompt)]
    group_ids = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_tokens,
                    add_special_tokens=not getattr(tokenizer, "chat_template", None))
    return enc, group_ids


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: list[str], samples_per_prompt: int, max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
           policy_version: int = 0, max_prompt_tokens: int = 512, min_new_tokens: int = 1) -> Experience:
    """Sample n responses per prompt with their behaviour log-probs, taken from the logits generate computed.

    They are exact log pi(a|s) at `temperature` when top_p == 1 and top_k == 0; with truncation the
    sampling distribution differs from pi and the recorded numbers are pi's, which is what PPO's ratio uses.
    """
    from transformers import LogitsProcessorList

    greedy = temperature == 0
    enc, group_ids = encode_prompts(tokenizer, prompts, samples_per_prompt, max_prompt_tokens)
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    if seed is not None:
        torch.manual_seed(seed)
    stop = eos_ids(model, tokenizer)
    sampler = _Sampler(temperature, top_p, top_k, stop, min_new_tokens)  # unused when greedy: generate's argmax
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop,
                         pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                         output_logits=greedy, min_new_tokens=min_new_tokens if greedy else None,
                         logits_processor=LogitsProcessorList([] if greedy else [sampler]))
    P = enc["input_ids"].shape[1]
    response = out.sequences[:, P:]  # [B, R]
    R = response.shape[1]
    if greedy:
        logprobs = torch.empty(response.shape, dtype=torch.float32, device=device)
        for t, step_logits in enumerate(out.logits[:R]):  # each [B, V]; gathered step by step, never stacked
            scaled = step_logits.float()
            logprobs[:, t] = scaled.gather(-1, response[:, t:t + 1]).squeeze(-1) - torch.logsumexp(scaled, -1)
    else:
        logprobs = torch.stack(sampler.logprobs[:R], dim=1)  # [B, R]
    mask = response_mask_from(response, stop, tokenizer.pad_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    input_ids = torch.cat([enc["input_ids"], response], dim=1)
    attention_mask = torch.cat([enc["attention_mask"], mask], dim=1)
    decoded = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Experience(input_ids=input_ids.cpu(), attention_mask=attention_mask.cpu(), response_mask=mask.cpu(),
                      behaviour_logprobs=(logprobs * mask).cpu(), prompts=[p for p in prompts for _ in range(samples_per_prompt)],
                      responses=[d.strip() for d in decoded], group_ids=group_ids, policy_version=policy_version)


def merge_experiences(parts: list[Experience], pad_id: int) -> Experience:
    """Concatenate batches from several rollout actors, re-padding prompts (left) and responses (right)."""
    if len(parts) == 1:
        return parts[0]
    P = max(p.input_ids.shape[1] - p.response_len for p in parts)
    R = max(p.response_len for p in parts)

    def pad(p: Experience, t: torch.Tensor, value: float, response: bool = False) -> torch.Tensor:
        if response:  # [B, R_i] -> [B, R]
            return torch.nn.functional.pad(t, (0, R - t.shape[1]), value=value)
        Pi = t.shape[1] - p.response_len  # [B, P_i + R_i] -> [B, P + R]
        return torch.nn.functional.pad(t, (P - Pi, R - p.response_len), value=value)

    versions = {p.policy_version for p in parts}
    if len(versions) != 1:
        raise RuntimeError(f"rollout actors sampled with different policy versions {sorted(versions)}")
    offset, groups = 0, []
    for p in parts:
        groups += [g + offset for g in p.group_ids]
        offset += max(p.group_ids) + 1
    return Experience(
        input_ids=torch.cat([pad(p, p.input_ids, pad_id) for p in parts]),
        attention_mask=torch.cat([pad(p, p.attention_mask, 0) for p in parts]),
        response_mask=torch.cat([pad(p, p.response_mask, 0, True) for p in parts]),
        behaviour_logprobs=torch.cat([pad(p, p.behaviour_logprobs, 0.0, True) for p in parts]),
        prompts=[x for p in parts for x in p.prompts], responses=[x for p in parts for x in p.responses],
        group_ids=groups, policy_version=versions.pop())
