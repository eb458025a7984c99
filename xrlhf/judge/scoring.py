"""Last-position forward passes for the judge: next-token logprobs without full-sequence logits."""
from __future__ import annotations

from typing import Any

import torch


def pad(seqs: list[list[int]], pad_id: int, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, T], attention_mask [N, T]) with every sequence padded to the longest on `side`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _decoder(model: Any) -> Any:
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def head_logprobs(model: Any, hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the whole vocabulary of the LM head on hidden [N, H], gathered at token_ids [K] -> [N, K]."""
    logits = model.get_output_embeddings()(hidden).float()  # [N, V]: one position per row, not [N, T, V]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)[:, token_ids.to(logits.device)]


@torch.inference_mode()
def last_logprobs(model: Any, seqs: list[list[int]], pad_id: int, token_ids: torch.Tensor) -> torch.Tensor:
    """Next-token logprobs [N, K] at the end of each sequence, one left-padded forward for all of them."""
    device = model.device
    ids, mask = pad(seqs, pad_id, "left")  # [N, T]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the real positions
    out = _decoder(model)(input_ids=ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device), use_cache=False)
    return head_logprobs(model, out.last_hidden_state[:, -1], token_ids)


@torch.inference_mode()
def shared_prefix_logprobs(model: Any, prefixes: list[list[int]], suffixes: list[list[list[int]]],
                           pad_id: int, token_ids: torch.Tensor) -> list[torch.Tensor]:
    """Next-token logprobs at the end of prefix[i] + suffix for each suffix of sample i -> [D_i, K] per sample.

    Each prefix runs once; its KV cache is copied to that sample's D_i suffix rows. Prefixes are
    left padded and suffixes right padded, so padding never sits between the two.
    """
    device = model.device
    decoder = _decoder(model)
    p_ids, p_mask = pad(prefixes, pad_id, "left")  # [B, P]
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    out = decoder(input_ids=p_ids.to(device), attention_mask=p_mask.to(device), position_ids=p_pos.to(device),
                  use_cache=True)
    rows = torch.tensor([i for i, s in enumerate(suffixes) for _ in s], dtype=torch.long)  # [R]: sample of each row
    cache = out.past_key_values
    cache.batch_select_indices(rows.to(device))  # [B, ...] -> [R, ...], one copy of the prefix per suffix
    flat = [s for per_sample in suffixes for s in per_sample]
    s_ids, s_mask = pad(flat, pad_id, "right")  # [R, S]
    s_pos = p_mask.sum(-1)[rows, None] + torch.arange(s_ids.shape[1])[None, :]  # continue after the real prefix
    mask = torch.cat([p_mask[rows], s_mask], dim=1)  # [R, P + S]
    out = decoder(input_ids=s_ids.to(device), attention_mask=mask.to(device), position_ids=s_pos.to(device),
                  past_key_values=cache, use_cache=True)
    last = s_mask.sum(-1) - 1  # [R]: index of each row's last real suffix token
    hidden = out.last_hidden_state[torch.arange(len(flat), device=device), last.to(device)]  # [R, H]
    logprobs = head_logprobs(model, hidden, token_ids)  # [R, K]
    return list(torch.split(logprobs, [len(s) for s in suffixes]))


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Tokens all sequences start with, leaving at least one token of each as its own suffix."""
    n = min(len(s) for s in seqs) - 1
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return max(n, 0)
