"""Last-position forward passes for the judge: next-token logprobs without full-sequence logits."""
from __future__ import annotations

import copy
from typing import Any

import torch

Part = tuple[list[list[int]], int]  # a group of sequences and the length of the prefix they all share


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


def head_logprobs(model: Any, hidden: torch.Tensor, token_ids: torch.Tensor | None) -> torch.Tensor:
    """LM-head logprobs [N, K] for hidden [N, H], renormalised among token_ids [K]; over the whole vocabulary if None.

    Expected scores and pairwise verdicts only compare the answer tokens with each other, so their
    logits are K rows of the head (a [N, H] x [H, K] product) instead of all 262k of gemma's: the
    renormalised probabilities are the same, without the full head's 670 MB of weights read per call.
    """
    head = model.get_output_embeddings()
    if token_ids is None:
        logits = head(hidden).float()  # [N, V]: one position per row, not [N, T, V]
    else:
        ids = token_ids.to(head.weight.device)
        bias = head.bias[ids] if getattr(head, "bias", None) is not None else None
        logits = torch.nn.functional.linear(hidden, head.weight[ids], bias).float()  # [N, K]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)


@torch.inference_mode()
def last_logprobs(model: Any, seqs: list[list[int]], pad_id: int, token_ids: torch.Tensor | None) -> torch.Tensor:
    """Next-token logprobs [N, K] at the end of each sequence (see head_logprobs), one left-padded forward for all."""
    device = model.device
    ids, mask = pad(seqs, pad_id, "left")  # [N, T]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the real positions
    out = _decoder(model)(input_ids=ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device), use_cache=False)
    return head_logprobs(model, out.last_hidden_state[:, -1], token_ids)


class PrefixCache:
    """The KV cache of one fixed token prefix (a judge's instructions and rubric), computed on first use, then reused.

    A judge's inputs all open with the same instructions, so across a run that part is computed once
    instead of once per step. Valid only while the model's weights stay fixed (judges are frozen).
    """

    def __init__(self, ids: list[int]) -> None:
        self.ids = list(ids)
        self._cache: Any = None

    def fits(self, seq: list[int], limit: int) -> bool:
        return 0 < len(self.ids) <= limit and seq[:len(self.ids)] == self.ids

    def get(self, model: Any) -> Any:
        """The cache itself (batch 1): callers copy it before they extend it."""
        if self._cache is None:
            self._cache = _extend(model, None, self.ids, 0)
        return self._cache


@torch.inference_mode()
def shared_prefix_logprobs(model: Any, groups: list[list[list[int]]], token_ids: torch.Tensor | None,
                           max_rows: int = 64, head: PrefixCache | None = None) -> list[torch.Tensor]:
    """Next-token logprobs [D_i, K] at the end of each sequence of each group, computing shared prefixes once.

    The prefix common to every sequence (the judge instructions, from `head` when it matches) runs
    once. Then, per chunk of groups (sorted by length) with at most max_rows sequences in all, two
    forward calls: every group's own common prefix (a sample's prompt and response) right padded in
    one batch on top of the root, and all the chunk's endings (one per dimension) right padded in one
    batch on top of their group's rows. A CPU forward call has a fixed cost (the weights are read once per call), so
    calls are per chunk, not per group.

    Padding sits between a group's prefix and its endings; the attention mask hides it and the
    position ids skip it. Sliding-window attention measures its window in cache slots, though, so a
    chunk whose padded width exceeds the model's window runs group by group, where no padding sits
    between real tokens; so does a chunk with no common root (a row with no tokens of its own would
    attend to nothing).
    """
    if not groups:
        return []
    root_len = common_prefix_length([s for g in groups for s in g])
    root_ids = groups[0][0][:root_len]
    if head is not None and head.fits(root_ids, root_len):
        root = head.get(model)  # never extended in place: _groups_on_root works on copies
        if root_len > len(head.ids):
            root = _extend(model, copy.deepcopy(root), root_ids[len(head.ids):], len(head.ids))
    else:
        root = _extend(model, None, root_ids, 0) if root_len else None
    window = getattr(model.config, "sliding_window", None)
    own = [common_prefix_length(g) for g in groups]  # each group's shared prefix (a sample's prompt + response)
    # Groups sorted by that length, so a chunk's right padding is small; results come back in order.
    order = sorted(range(len(groups)), key=own.__getitem__)
    done: list[torch.Tensor] = []
    for chunk in _chunks([(groups[i], own[i]) for i in order], max_rows):
        width = max(n for _, n in chunk) + max(len(s) - n for g, n in chunk for s in g)
        if len(chunk) > 1 and (root is None or (window and width > window)):
            done += [lp for part in chunk for lp in _groups_on_root(model, root, root_len, [part], token_ids)]
        else:
            done += _groups_on_root(model, root, root_len, chunk, token_ids)
    out: list[torch.Tensor] = [torch.empty(0)] * len(groups)
    for i, lp in zip(order, done):
        out[i] = lp
    return out


def _groups_on_root(model: Any, root: Any, root_len: int, parts: list[Part],
                    token_ids: torch.Tensor | None) -> list[torch.Tensor]:
    """Two calls on a copy of the root cache: the groups' own prefixes [G, L], then all their endings [R, S]."""
    device = model.device
    cache = copy.deepcopy(root)
    groups, shared = [g for g, _ in parts], [n for _, n in parts]
    if cache is not None:
        cache.batch_select_indices(torch.zeros(len(groups), dtype=torch.long, device=device))  # [1] -> [G]
    mids = [g[0][root_len:n] for g, n in zip(groups, shared)]
    mid_mask = torch.zeros(len(groups), 0, dtype=torch.long)
    if any(mids):
        ids, mid_mask = pad(mids, model.config.pad_token_id or 0, "right")  # [G, L]
        positions = root_len + torch.arange(ids.shape[1])[None, :].expand_as(ids)
        full = torch.cat([torch.ones(len(groups), root_len, dtype=torch.long), mid_mask], dim=1)
        cache = _decoder(model)(input_ids=ids.to(device), attention_mask=full.to(device),
                                position_ids=positions.to(device), cache=cache, use_cache=True).cache
    owner = torch.tensor([i for i, g in enumerate(groups) for _ in g], dtype=torch.long)  # [R]: each row's group
    if cache is not None:
        cache.batch_select_indices(owner.to(device))  # [G] -> [R]
    endings = [s[n:] for g, n in zip(groups, shared) for s in g]
    ids, end_mask = pad(endings, model.config.pad_token_id or 0, "right")  # [R, S]
    start = root_len + mid_mask.sum(-1)[owner]  # [R]: real tokens before each ending
    positions = start[:, None] + torch.arange(ids.shape[1])[None, :]
    full = torch.cat([torch.ones(len(endings), root_len, dtype=torch.long), mid_mask[owner], end_mask], dim=1)
    out = _decoder(model)(input_ids=ids.to(device), attention_mask=full.to(device),
                          position_ids=positions.to(device), cache=cache, use_cache=True)
    last = end_mask.sum(-1) - 1  # [R]: each row's last real token; right pads come after it and are never attended
    hidden = out.last_hidden_state[torch.arange(len(endings), device=device), last.to(device)]  # [R, H]
    return list(head_logprobs(model, hidden, token_ids).split([len(g) for g in groups]))


def _extend(model: Any, cache: Any, ids: list[int], start: int) -> Any:
    """The KV cache (batch 1) after running ids from position `start` on top of cache; cache itself if ids is empty."""
    if not ids:
        return cache
    t = torch.tensor([ids], dtype=torch.long, device=model.device)  # [1, L]
    positions = torch.arange(start, start + t.shape[1], device=model.device)[None, :]
    return _decoder(model)(input_ids=t, position_ids=positions, cache=cache, use_cache=True).cache


def _chunks(parts: list[Part], max_rows: int) -> list[list[Part]]:
    """Consecutive parts packed so each chunk holds at most max_rows sequences (always at least one group)."""
    chunks: list[list[Any]] = [[]]
    rows = 0
    for part in parts:
        if chunks[-1] and rows + len(part[0]) > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(part)
        rows += len(part[0])
    return chunks if chunks[0] else []


def common_prefix_length(seqs: list[list[int]]) -> int:
    """Tokens all sequences start with, leaving at least one token of each as its own suffix."""
    n = min(len(s) for s in seqs) - 1
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return max(n, 0)
