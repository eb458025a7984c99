"""Last-position forward passes for the judge: next-token logprobs without full-sequence logits."""
from __future__ import annotations

import copy
from typing import Any

import torch

from xrlhf.ops import cache_arg, returned_cache

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


VOCAB_BLOCK = 16384  # target_logprobs: [ROW_BLOCK, VOCAB_BLOCK] logits at a time (32 MiB), never [R, 262144]
ROW_BLOCK = 512


def target_logprobs(model: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[r] | hidden[r]) over the whole vocabulary, [R], for hidden [R, H] and targets [R].

    Rows go through the head ROW_BLOCK at a time, one vocabulary block after another with a running logsumexp:
    the head's weights are read once per block of rows instead of once per sequence (a [25, H] x [H, 262k]
    product is bound by reading those 670 MB, and took 62% of a likelihood judgement), and no [R, V] logits exist.
    """
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    cap = getattr(model.config, "final_logit_softcapping", None)

    def capped(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.tanh(logits / cap) * cap if cap else logits

    ids = targets.to(weight.device)
    picked = (hidden * weight[ids]).sum(-1)  # [R]: each row's own target logit
    if bias is not None:
        picked = picked + bias[ids]
    picked = capped(picked)
    lse = torch.empty_like(picked)
    for r0 in range(0, hidden.shape[0], ROW_BLOCK):
        rows = hidden[r0:r0 + ROW_BLOCK]
        acc = torch.full((rows.shape[0],), -float("inf"), device=hidden.device)
        for v0 in range(0, weight.shape[0], VOCAB_BLOCK):
            b = None if bias is None else bias[v0:v0 + VOCAB_BLOCK]
            block = capped(torch.nn.functional.linear(rows, weight[v0:v0 + VOCAB_BLOCK], b))  # [rows, VOCAB_BLOCK]
            acc = torch.logaddexp(acc, torch.logsumexp(block, dim=-1))
        lse[r0:r0 + ROW_BLOCK] = acc
    return picked - lse


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

    def fits(self, seq: list[int]) -> bool:
        """Whether seq starts with these ids (and they are not empty)."""
        return 0 < len(self.ids) <= len(seq) and seq[:len(self.ids)] == self.ids

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
    once. Then one forward call per chunk of groups (sorted by length, at most max_rows sequences in
    all): a row per group holding the group's own common prefix (a sample's prompt and response)
    followed by every one of its endings (one per dimension), on top of the root cache. The attention
    mask lets each ending see the root, its group's prefix and itself, never the other endings, and
    its position ids continue from the prefix, so each ending ends where its own unpadded sequence
    would. The masks are built from position ids, so sliding-window layers count real tokens whatever
    the padding. A CPU forward call has a fixed cost (the weights are read once per call), so calls
    are per chunk, not per group, and no ending is padded to the longest one.

    An attention kernel that takes no dense mask (flash-attention, flex) gets plain left-padded
    batches of the chunk's sequences instead: exact, without the sharing.
    """
    if not groups:
        return []
    pad_id = model.config.pad_token_id or 0
    own = [common_prefix_length(g) for g in groups]  # each group's shared prefix (a sample's prompt + response)
    # Groups sorted by the length of their packed row, so a chunk's right padding is small; results come back in order.
    order = sorted(range(len(groups)), key=lambda i: own[i] + sum(len(s) - own[i] for s in groups[i]))
    chunks = _chunks([(groups[i], own[i]) for i in order], max_rows)
    done: list[torch.Tensor] = []
    if getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        for chunk in chunks:
            flat = last_logprobs(model, [s for g, _ in chunk for s in g], pad_id, token_ids)
            done += flat.split([len(g) for g, _ in chunk])
        return _in_order(order, done)
    root_len = common_prefix_length([s for g in groups for s in g])
    root_ids = groups[0][0][:root_len]
    if head is not None and head.fits(root_ids):
        root = head.get(model)  # never extended in place: _packed_on_root works on a copy
        if root_len > len(head.ids):
            root = _extend(model, copy.deepcopy(root), root_ids[len(head.ids):], len(head.ids))
    else:
        root = _extend(model, None, root_ids, 0) if root_len else None
    for chunk in chunks:
        done += _packed_on_root(model, root, root_len, chunk, token_ids)
    return _in_order(order, done)


def _in_order(order: list[int], done: list[torch.Tensor]) -> list[torch.Tensor]:
    """Results computed in `order` (a permutation of the groups), put back in the groups' own order."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(order)
    for i, lp in zip(order, done):
        out[i] = lp
    return out


def _packed_on_root(model: Any, root: Any, root_len: int, parts: list[Part],
                    token_ids: torch.Tensor | None) -> list[torch.Tensor]:
    """One call on a copy of the root cache: row g = group g's own prefix, then each of its endings in turn."""
    device = model.device
    ids: list[list[int]] = []
    pos: list[list[int]] = []
    seg: list[list[int]] = []  # 0: the group's prefix, k: its k-th ending
    last: list[int] = []  # each sequence's last token: its slot in its group's row
    for g, n in parts:
        row, p, sg = list(g[0][root_len:n]), list(range(root_len, n)), [0] * (n - root_len)
        for k, s in enumerate(g, 1):
            row += s[n:]
            p += range(n, len(s))
            sg += [k] * (len(s) - n)
            last.append(len(row) - 1)
        ids.append(row)
        pos.append(p)
        seg.append(sg)
    states = _packed_forward(model, root, root_len, ids, pos, seg)
    rows = torch.tensor([r for r, (g, _) in enumerate(parts) for _ in g], dtype=torch.long)
    hidden = states[rows.to(device), torch.tensor(last, device=device)]  # [R, H]
    return list(head_logprobs(model, hidden, token_ids).split([len(g) for g, _ in parts]))


def _packed_forward(model: Any, root: Any, root_len: int, ids: list[list[int]], pos: list[list[int]],
                    seg: list[list[int]]) -> torch.Tensor:
    """Last hidden states [G, Q, H] of packed rows (token ids, positions, segments: 0 a row's shared part, k its
    k-th ending) on a copy of the root cache (batch 1, or None), which is never extended in place."""
    device = model.device
    tokens = pad(ids, model.config.pad_token_id or 0, "right")[0]  # [G, Q]
    positions = pad(pos, 0, "right")[0]
    segments = pad(seg, -1, "right")[0]  # -1: padding
    cache = copy.deepcopy(root)
    if cache is not None:
        cache.batch_select_indices(torch.zeros(len(ids), dtype=torch.long, device=device))  # [1] -> [G]
    mask = _packed_masks(model, cache, root_len, positions, segments)
    return _decoder(model)(input_ids=tokens.to(device), attention_mask=mask, position_ids=positions.to(device),
                           use_cache=cache is not None, **{cache_arg(): cache}).last_hidden_state


def _packed_masks(model: Any, cache: Any, root_len: int, positions: torch.Tensor, segments: torch.Tensor) -> Any:
    """Attention masks [G, 1, Q, root + Q] of a packed chunk: a tensor, or one per layer type for hybrid models.

    A slot sees the root and, causally, the slots of its row in its group's prefix (segment 0) or in its
    own ending. Sliding-window layers also drop keys `window` positions or more behind the query; their
    cache holds only the root's last slots (the window's), so their masks are that much narrower.
    """
    cfg = model.config
    n_rows, width = positions.shape
    slots = torch.arange(width)
    key_seg = segments[:, None, :]  # [G, 1, Q]
    sees = (slots[:, None] >= slots[None, :]) & (key_seg >= 0) & ((key_seg == 0) | (key_seg == segments[:, :, None]))
    sees |= torch.eye(width, dtype=torch.bool)  # padding slots see themselves: no mask row is empty, on any kernel
    window = getattr(cfg, "sliding_window", None)
    types = list(getattr(cfg, "layer_types", None) or [])
    if not types:
        types = ["sliding_attention" if window and getattr(cfg, "use_sliding_window", True) else "full_attention"]

    def build(kind: str) -> torch.Tensor:
        held = root_len
        if cache is not None:
            layer = cache.layers[types.index(kind)]
            held = layer.keys.shape[-2] if getattr(layer, "keys", None) is not None else root_len
        key_pos = torch.cat([torch.arange(root_len - held, root_len).expand(n_rows, held), positions], dim=1)  # [G, K]
        mask = torch.cat([torch.ones(n_rows, width, held, dtype=torch.bool), sees], dim=2)  # [G, Q, K]
        if kind == "sliding_attention" and window:
            mask &= (positions[:, :, None] - key_pos[:, None, :]) < window
        mask = mask[:, None].to(model.device)
        if cfg._attn_implementation == "sdpa":
            return mask
        additive = torch.zeros(mask.shape, dtype=model.dtype, device=model.device)  # eager adds its mask
        return additive.masked_fill(~mask, torch.finfo(model.dtype).min)

    if len(set(types)) == 1:
        return build(types[0])
    return {kind: build(kind) for kind in set(types)}


def _extend(model: Any, cache: Any, ids: list[int], start: int) -> Any:
    """The KV cache (batch 1) after running ids from position `start` on top of cache; cache itself if ids is empty."""
    if not ids:
        return cache
    t = torch.tensor([ids], dtype=torch.long, device=model.device)  # [1, L]
    positions = torch.arange(start, start + t.shape[1], device=model.device)[None, :]
    return returned_cache(_decoder(model)(input_ids=t, position_ids=positions, use_cache=True, **{cache_arg(): cache}))


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


@torch.inference_mode()
def tail_logprobs(model: Any, seqs: list[list[int]], tails: list[int], max_rows: int = 16,
                  head: PrefixCache | None = None) -> list[torch.Tensor]:
    """log p of each sequence's last tails[i] tokens given all before them, [tails[i]] per sequence.

    The prefix every sequence shares with `head` (the judge's instructions) comes from its cache; the rest runs
    in right-padded chunks of at most max_rows sequences (padding after the real tokens is never attended to).
    Only the tail positions go through the LM head, over the whole vocabulary (a likelihood needs the full
    normaliser, unlike the answer-token-only head of expected scores).
    """
    if not seqs:
        return []
    device, pad_id = model.device, model.config.pad_token_id or 0
    fits = head is not None and all(head.fits(s) and len(s) - t > len(head.ids) for s, t in zip(seqs, tails))
    start = len(head.ids) if fits else 0  # type: ignore[union-attr]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    rows: list[torch.Tensor] = [torch.empty(0)] * len(seqs)  # [tails[i], H] per sequence
    targets: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for at in range(0, len(order), max_rows):
        chunk = order[at:at + max_rows]
        rests = [seqs[i][start:] for i in chunk]
        ids, mask = pad(rests, pad_id, "right")  # [N, T]
        n, width = ids.shape
        positions = (start + torch.arange(width)).expand(n, width)
        cache = None
        if start:
            cache = copy.deepcopy(head.get(model))  # type: ignore[union-attr]
            cache.batch_select_indices(torch.zeros(n, dtype=torch.long, device=device))  # [1] -> [N]
        full_mask = torch.cat([torch.ones(n, start, dtype=torch.long), mask], dim=1)
        hidden = _decoder(model)(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                                 position_ids=positions.to(device), use_cache=cache is not None,
                                 **{cache_arg(): cache}).last_hidden_state  # [N, T, H]
        for row, i in enumerate(chunk):
            end, k = len(rests[row]), tails[i]
            rows[i], targets[i] = hidden[row, end - k - 1:end - 1], ids[row, end - k:end]
    flat = target_logprobs(model, torch.cat(rows), torch.cat(targets)).cpu()  # every tail token in one head pass
    return list(flat.split(list(tails)))


Group = tuple[list[int], list[list[int]]]  # a prefix (instructions + context) and the tails scored after it


@torch.inference_mode()
def grouped_tail_logprobs(model: Any, groups: list[Group], max_rows: int = 16,
                          head: PrefixCache | None = None) -> list[list[torch.Tensor]]:
    """log p of every tail's tokens given its group's prefix, [len(tail)] per tail, each prefix computed once.

    A judge scores the n samples of one prompt after the same instructions and question: tail_logprobs would run
    that prefix once per sample. Here a group's row holds the prefix's own part (after `head`, whose cache is
    computed once per judge) and then each of its tails in turn; the mask (as shared_prefix_logprobs builds it) lets
    a tail see the head, its prefix and itself, never another tail, and its positions continue from the prefix, so
    every tail gets the log-probs it would get alone. A tail's first token is predicted at the prefix's last slot,
    which all its tails share. Chunks hold at most max_rows tails. Attention kernels without dense masks get
    tail_logprobs on the unpacked sequences (exact, without the sharing).
    """
    if not groups:
        return []
    if getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        flat = tail_logprobs(model, [p + t for p, tails in groups for t in tails],
                             [len(t) for _, tails in groups for t in tails], max_rows, head)
        return _regroup(flat, groups)
    device = model.device
    fits = head is not None and all(head.fits(p) and len(p) > len(head.ids) for p, _ in groups)
    root_len = len(head.ids) if fits else 0  # type: ignore[union-attr]
    order = sorted(range(len(groups)), key=lambda i: len(groups[i][0]) + sum(len(t) for t in groups[i][1]))
    chunks = _chunks([(groups[i][1], i) for i in order], max_rows)  # rows counted in tails
    slots: list[torch.Tensor] = []  # per chunk: (row, slot) of the hidden state predicting each tail token
    hidden_rows: list[torch.Tensor] = []
    targets: list[int] = []
    for chunk in chunks:
        ids: list[list[int]] = []
        pos: list[list[int]] = []
        seg: list[list[int]] = []
        where: list[tuple[int, int]] = []
        for r, (tails, i) in enumerate(chunk):
            prefix = groups[i][0]
            row, sg = list(prefix[root_len:]), [0] * (len(prefix) - root_len)
            p = list(range(root_len, len(prefix)))
            for k, tail in enumerate(tails, 1):
                first = len(row)
                where += [(r, len(prefix) - root_len - 1)] + [(r, first + j) for j in range(len(tail) - 1)]
                targets += tail
                row += tail
                p += range(len(prefix), len(prefix) + len(tail))
                sg += [k] * len(tail)
            ids.append(row)
            pos.append(p)
            seg.append(sg)
        root = head.get(model) if root_len else None  # type: ignore[union-attr]
        states = _packed_forward(model, root, root_len, ids, pos, seg)
        at = torch.tensor(where, dtype=torch.long, device=device)  # [N, 2]
        hidden_rows.append(states[at[:, 0], at[:, 1]])
    flat = target_logprobs(model, torch.cat(hidden_rows), torch.tensor(targets, dtype=torch.long)).cpu()
    # flat follows the chunks' order; split it per tail and put the groups back in their own order
    done = flat.split([len(t) for tails, _ in (c for chunk in chunks for c in chunk) for t in tails])
    out_groups: list[list[torch.Tensor]] = [[] for _ in groups]
    it = iter(done)
    for chunk in chunks:
        for tails, i in chunk:
            out_groups[i] = [next(it) for _ in tails]
    return out_groups


def _regroup(flat: list[torch.Tensor], groups: list[Group]) -> list[list[torch.Tensor]]:
    """Per-tail results in the groups' flattened order, back into one list per group."""
    it = iter(flat)
    return [[next(it) for _ in tails] for _, tails in groups]
