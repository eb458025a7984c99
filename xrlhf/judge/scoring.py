"""Last-position forward passes for the judge: next-token logprobs without full-sequence logits."""
from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import DynamicCache


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
def shared_prefix_logprobs(model: Any, groups: list[list[list[int]]], token_ids: torch.Tensor) -> list[torch.Tensor]:
    """Next-token logprobs [D_i, K] at the end of each sequence of each group, computing shared prefixes once.

    Three stages: the prefix common to every sequence (the judge instructions) runs once; each
    group's own common prefix (a sample's prompt and response) runs once on a copy of that cache;
    then the group's D_i endings (one per dimension) run as one right-padded batch. No padding ever
    sits between real tokens, so sliding-window attention sees exactly what an unpadded pass sees.
    """
    root_len = common_prefix_length([s for g in groups for s in g])
    root = _extend(model, None, [groups[0][0][:root_len]], 0)
    out = []
    for group in groups:
        shared = common_prefix_length(group)
        cache = _extend(model, copy.deepcopy(root), [group[0][root_len:shared]], root_len)
        cache.batch_select_indices(torch.zeros(len(group), dtype=torch.long, device=model.device))  # [1] -> [D_i]
        out.append(_finish(model, cache, [s[shared:] for s in group], shared, token_ids))
    return out


def _extend(model: Any, cache: Any, seqs: list[list[int]], start: int) -> Any:
    """The KV cache after running equal-length seqs [N, L] from position `start` on top of cache."""
    if not seqs[0]:
        return cache if cache is not None else DynamicCache(config=model.config)
    ids = torch.tensor(seqs, dtype=torch.long, device=model.device)  # [N, L]
    positions = torch.arange(start, start + ids.shape[1], device=model.device).expand_as(ids)
    return _decoder(model)(input_ids=ids, position_ids=positions, cache=cache, use_cache=True).cache


def _finish(model: Any, cache: Any, endings: list[list[int]], start: int, token_ids: torch.Tensor) -> torch.Tensor:
    """Run the endings [R, S] (right padded) after a cache of `start` real tokens; logprobs [R, K] at each end."""
    device = model.device
    ids, mask = pad(endings, model.config.pad_token_id or 0, "right")  # [R, S]
    positions = start + torch.arange(ids.shape[1])[None, :].expand_as(ids)
    full_mask = torch.cat([torch.ones(len(endings), start, dtype=torch.long), mask], dim=1)  # [R, start + S]
    out = _decoder(model)(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                          position_ids=positions.to(device), cache=cache, use_cache=True)
    last = mask.sum(-1) - 1  # [R]: each row's last real token; right pads come after it and are never attended
    hidden = out.last_hidden_state[torch.arange(len(endings), device=device), last.to(device)]  # [R, H]
    return head_logprobs(model, hidden, token_ids)


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Tokens all sequences start with, leaving at least one token of each as its own suffix."""
    n = min(len(s) for s in seqs) - 1
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return max(n, 0)
