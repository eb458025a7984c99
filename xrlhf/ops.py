"""Masked statistics and log-prob kernels: plain tensor functions under the algorithms, the learners and the batch.

Layout of a sequence batch: `input_ids [B, T]` is the prompt left-padded to P followed by the response right-padded
to R (T = P + R). Response-aligned tensors are `[B, R]`: `logprobs[b, j]` is the log-probability of response token
j given everything before it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over entries where `mask` is 1; an all-zero mask gives 0, not NaN."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all entries where `mask` is 1 (a scalar)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        # Bessel's correction n / (n - 1); a single entry has var 0 either way.
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise `x` to unit variance (and zero mean if `shift_mean`) using only masked-in entries.

    Padded entries come back as 0.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int = 4,
                    temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[token] per position, `[B, L, V], [B, L] -> [B, L]`, in float32.

    Works `chunk_size` batch rows at a time so no full `[B, L, V]` log-softmax is ever built; the temperature is
    applied per chunk too, so no scaled copy of the whole `[B, L, V]` either.
    """
    out = []
    for rows, row_tokens in zip(logits.split(chunk_size), tokens.split(chunk_size)):
        rows = rows.float()  # [c, L, V]; bf16 logsumexp over a large vocabulary loses too much
        if temperature != 1.0:
            rows = rows / temperature
        picked = rows.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)  # [c, L]
        # log p(y) = z_y - log Σ_v exp(z_v)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    return torch.cat(out)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 4, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position, `[B, L, V] -> [B, L]`, chunked over batch rows."""
    out = []
    for rows in logits.split(chunk_size):
        rows = rows.float()  # [c, L, V]
        if temperature != 1.0:
            rows = rows / temperature
        probs = torch.softmax(rows, dim=-1)
        # H = -Σ p log p = logsumexp(z) - Σ p z
        out.append(torch.logsumexp(rows, dim=-1) - (probs * rows).sum(-1))
    return torch.cat(out)


@dataclass
class ResponseForward:
    """What one forward pass over prompt + response gives a learner."""

    logprobs: torch.Tensor  # [B, R]
    entropy: torch.Tensor | None = None  # [B, R]
    hidden: torch.Tensor | None = None  # [B, R, H] last-layer states at the positions predicting the response


# logits_to_keep for a pass whose KV cache is all that is wanted: an empty index, so the LM head multiplies no row
# (logits_to_keep=1 still reads the whole 262k-entry head for one row per prompt, as a strided bmm: 0.23 s a pass).
NO_LOGITS = torch.empty(0, dtype=torch.long)


def response_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_len: int,
    temperature: float = 1.0,
    return_entropy: bool = False,
    return_hidden: bool = False,
    entropy_grad: bool = True,
    share_prompts: bool = True,
) -> ResponseForward:
    """Log-probabilities of the response tokens under a HF causal LM, `[B, T] -> [B, R]`.

    `temperature` must be the sampling temperature, so the result matches the sampler's logprobs.
    Values at padded response positions are meaningless; mask them with `response_mask`.
    `entropy_grad=False` computes the entropy outside autograd: for a metric that is not in the loss, which would
    otherwise keep a softmax over the whole vocabulary per position alive until the backward pass is done.
    Rows with the same prompt (a prompt's samples) run it once (`share_prompts`, shared_prompt_rows); the results
    and gradients are those of one pass per row.
    """
    T = input_ids.shape[1]
    P = T - response_len
    # Left padding would otherwise shift every real token's position.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, T]
    # The logits at position t predict token t + 1, so only positions [P-1, T-1) are needed: with a 262k
    # vocabulary the prompt's logits would dominate memory and the LM head's FLOPs. The positions go in as a
    # tensor, not as the int R + 1: transformers slices an int as `hidden[:, -k:]`, a strided view, and the LM
    # head on a strided [B, k, H] runs as a broadcast bmm (≈1.5× slower on CPU); indexing makes it contiguous.
    shared = shared_prompt_rows(input_ids, attention_mask, P) if share_prompts and _can_share(model) else None
    if shared is None:
        keep = torch.arange(P - 1, T - 1, device=input_ids.device)
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=return_hidden,
            logits_to_keep=keep,
        )
        hidden = out.hidden_states[-1][:, P - 1 : T - 1] if return_hidden else None
    else:
        # Each distinct prompt (all but its last token) once, its KV cache indexed out to its rows (autograd
        # carries every row's gradient back into the one prompt pass), then one pass over the positions whose
        # outputs are needed: the last prompt token and the response but its last token.
        first, owner = shared
        cache = returned_cache(model(input_ids=input_ids[first, : P - 1], attention_mask=attention_mask[first, : P - 1],
                                     position_ids=position_ids[first, : P - 1], use_cache=True,
                                     logits_to_keep=NO_LOGITS))
        cache.batch_select_indices(owner)
        out = model(
            input_ids=input_ids[:, P - 1 : T - 1],
            attention_mask=attention_mask[:, : T - 1],
            position_ids=position_ids[:, P - 1 : T - 1],
            use_cache=True,
            output_hidden_states=return_hidden,
            **{cache_arg(): cache},
        )
        hidden = out.hidden_states[-1] if return_hidden else None
    logits = out.logits  # [B, R, V]; temperature is applied per chunk
    entropy = None
    if return_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits if entropy_grad else logits.detach(), temperature=temperature)
    return ResponseForward(
        logprobs=gather_logprobs(logits, input_ids[:, P:], temperature=temperature),
        entropy=entropy,
        hidden=hidden,
    )


# transformers renamed the KV cache argument and output field from `past_key_values` to `cache` (5.2x); the vLLM
# environment pins an older release, so both are spoken: the output field's name is the argument's.
@lru_cache(maxsize=None)
def cache_arg() -> str:
    """The name transformers gives the KV cache, as a forward's argument and as its output's field."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The KV cache a forward with use_cache=True returned, under either name."""
    return getattr(out, cache_arg())


def shared_prompt_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       prompt_len: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows whose prompt (all but its last token, with its padding) is the same: (the first row of each distinct
    prompt [U], each row's index into those [B]), or None when no two rows share one or the prompt is one token."""
    if prompt_len < 2:
        return None
    key = torch.cat([input_ids[:, : prompt_len - 1], attention_mask[:, : prompt_len - 1].to(input_ids.dtype)], -1)
    distinct, owner = torch.unique(key, dim=0, return_inverse=True)
    if distinct.shape[0] == key.shape[0]:
        return None
    first = torch.full((distinct.shape[0],), key.shape[0], dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, owner, torch.arange(key.shape[0], device=key.device), reduce="amin")
    return first, owner


def _can_share(model: torch.nn.Module) -> bool:
    """A KV cache can carry the prompt pass: not under gradient checkpointing while training (transformers turns
    the cache off there)."""
    return not (model.training and any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()))
