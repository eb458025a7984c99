"""Sampling with transformers `generate`, keeping the behaviour log-probabilities it already computed."""
from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch

from xrlhf.data import format_prompt
from xrlhf.ops import NO_LOGITS, cache_arg, returned_cache
from xrlhf.policy.experience import Experience


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a response (gemma's chat turn end as well as the plain EOS)."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def holds_stop(tokenizer: Any, ids: list[int], stop: list[str]) -> bool:
    """Whether the text of these response tokens holds one of the stop texts after its first non-blank character
    (a blank line before an answer ends nothing; special tokens are not text)."""
    text = tokenizer.decode(ids, skip_special_tokens=True).lstrip()
    return any(t in text for t in stop)


class StopTexts:
    """A stopping criterion for generate: a row is done at the token that completes one of the stop texts, by the
    same rule as cut_at_stop_texts (transformers' own stop_strings reads token strings, where gemma's "<pad>"
    would hold an "a", so the two could disagree)."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [holds_stop(self.tokenizer, row[self.prompt_len:].tolist(), self.stop) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def cut_at_stop_texts(tokenizer: Any, response: torch.Tensor, mask: torch.Tensor,
                       stop: Iterable[str]) -> tuple[torch.Tensor, list[str]]:
    """End each response at the first token whose text completes one of the `stop` texts after the response's first
    non-blank character (e.g. "\\n\\n", the blank line after an answer, or "User:", a base model starting the next
    turn): that token is the last one kept in the mask, and the text returned is the response before the stop
    text.  # mask [B, R]"""
    stop = [t for t in stop if t]
    mask = mask.clone()
    texts = []
    for i, (ids, m) in enumerate(zip(response.tolist(), mask.tolist())):
        kept = [t for t, keep in zip(ids, m) if keep]
        text = tokenizer.decode(kept, skip_special_tokens=True).lstrip()
        if stop and any(t in text for t in stop):
            end = next(n for n in range(1, len(kept) + 1) if holds_stop(tokenizer, kept[:n], stop))
            mask[i, end:] = 0
            text = tokenizer.decode(kept[:end], skip_special_tokens=True).lstrip()
            text = text[:min(text.find(t) for t in stop if t in text)]
        texts.append(text.strip())
    return mask, texts


def response_mask_from(tokens: torch.Tensor, stop_ids: list[int], pad_id: int) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it.  # [B, R]"""
    is_stop = torch.zeros_like(tokens, dtype=torch.bool)
    for sid in stop_ids:
        is_stop |= tokens == sid
    # positions strictly after the first stop token are padding
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0
    return (~after_stop).long()


def draw(logp: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row from exp(logp) (optionally top-k / nucleus truncated).  # [B, V] -> [B, 1]"""
    return draw_from(logp.exp(), top_p, top_k)


def draw_from(weights: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row in proportion to non-negative `weights` (unnormalised probabilities), optionally top-k /
    nucleus truncated, by inverse CDF: one uniform number per row. torch.multinomial, which generate uses, draws an
    exponential variate for every vocabulary entry (262k for gemma), 14% of a CPU rollout's time.  # [B, V] -> [B, 1]
    """
    probs = weights
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each entry
        sorted_p = torch.where(before < top_p * sorted_p.sum(-1, keepdim=True), sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return _inverse_cdf(probs)


_BLOCK = 1024  # vocabulary entries per block of the two-level search


def _last_positive(x: torch.Tensor) -> torch.Tensor:
    """The index of each row's last positive entry.  # [B, N] -> [B, 1]"""
    idx = torch.arange(x.shape[-1], device=x.device)
    return torch.where(x > 0, idx, torch.zeros_like(idx)).amax(-1, keepdim=True)


def _inverse_cdf(probs: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw in two levels: the mass of each block of _BLOCK entries, a search over the block masses, then
    a cumulative sum inside the chosen block only. A full-vocabulary cumulative sum writes B x V numbers per step;
    this reads the vocabulary once (the block sums) and writes B x V / _BLOCK. Never returns a zero-weight entry: a
    uniform number rounded onto the very end of the mass falls back to the last positive block / entry.
    # [B, V] -> [B, 1]"""
    B, V = probs.shape
    if V <= 4 * _BLOCK:
        cdf = probs.cumsum(-1)
        u = torch.rand(B, 1, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
        return torch.minimum(torch.searchsorted(cdf, u, right=True), _last_positive(probs))
    pad = (-V) % _BLOCK
    blocks = (torch.nn.functional.pad(probs, (0, pad)) if pad else probs).view(B, -1, _BLOCK)
    mass = blocks.sum(-1)  # [B, V / _BLOCK]
    cum = mass.cumsum(-1)
    u = torch.rand(B, 1, device=probs.device, dtype=cum.dtype) * cum[:, -1:]
    b = torch.minimum(torch.searchsorted(cum, u, right=True), _last_positive(mass))  # [B, 1]
    below = torch.where(b > 0, cum.gather(-1, (b - 1).clamp(min=0)), torch.zeros_like(u))  # mass before block b
    inner = blocks[torch.arange(B, device=probs.device), b.squeeze(-1)]  # [B, _BLOCK]
    j = torch.searchsorted(inner.cumsum(-1), u - below, right=True)
    return b * _BLOCK + torch.minimum(j, _last_positive(inner))


class _Sampler:
    """A logits processor that samples the next token itself and hands generate a one-hot choice (generate runs
    greedy and takes it). It records pi's log-prob of the token (softmax of logits / T, before truncation and
    before the end-of-response mask of the first min_new_tokens steps), which is what PPO's ratio needs.

    It works in place in `scores`, generate's float32 copy of this step's last logits (never kept by generate while
    it samples: `sample` asks for the raw logits only on its greedy path, where this processor is not used): the
    exponentials, then the one-hot answer. Fresh [B, V] buffers every step cost page faults as well as passes."""

    def __init__(self, temperature: float, top_p: float, top_k: int, stop_ids: list[int], min_new_tokens: int = 1):
        self.temperature, self.top_p, self.top_k, self.stop_ids = temperature, top_p, top_k, stop_ids
        self.min_new_tokens = min_new_tokens
        self.logprobs: list[torch.Tensor] = []  # one [B] per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        w = scores if scores.dtype == torch.float32 else scores.float()
        if self.temperature != 1.0:
            w.div_(self.temperature)
        w.sub_(w.amax(-1, keepdim=True)).exp_()  # unnormalised pi: exp(logit / T - max)  [B, V]
        log_total = w.sum(-1, keepdim=True).log()
        if len(self.logprobs) < self.min_new_tokens and self.stop_ids:  # no stop before min_new_tokens
            w[:, self.stop_ids] = 0.0  # the chosen token is then never a stop, so its recorded log-prob is pi's
        token = draw_from(w, self.top_p, self.top_k)  # [B, 1]
        self.logprobs.append((w.gather(-1, token).log() - log_total).squeeze(-1))
        return w.fill_(float("-inf")).scatter_(-1, token, 0.0)


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, w)


def _vocab_blocks(x: torch.Tensor, w: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """[N, H] x [V, H]^T one block of output rows (the LM head's vocabulary) at a time, into one [N, V] output."""
    out = x.new_empty(x.shape[0], w.shape[0])
    for v0 in range(0, w.shape[0], block):
        out[:, v0:v0 + block] = torch.nn.functional.linear(x, w[v0:v0 + block])
    return out


def _transposed_blocks(x: torch.Tensor, w: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """The same product as W x^T ([V, N], one block of output rows at a time), transposed back."""
    out_t = x.new_empty(w.shape[0], x.shape[0])
    xt = x.t()
    for v0 in range(0, w.shape[0], block):
        torch.mm(w[v0:v0 + block], xt, out=out_t[v0:v0 + block])
    return out_t.t().contiguous()


# Packed copies of weights for oneDNN, by id(weight): (weakref to it, its version when packed, the packed copy).
_packed_weights: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}


# The row count the packed layout is chosen for. Measured here (the LM head and a decoder weight): layouts for 4 to
# 1,024 rows run 4-128 rows at the same speed, and 1 row as fast as a 1-row layout does, while a layout for 1 row
# runs 4-16 rows at half speed; so one fixed layout, not the first call's row count.
PACK_ROWS = 16


def packed_weight(w: torch.Tensor) -> torch.Tensor:
    """w reordered once into oneDNN's blocked layout (for PACK_ROWS rows). Kept while w lives and is not written
    to (an in-place update, a weight sync, bumps its version and the next call packs again); a second copy of the
    weight in memory."""
    key = id(w)
    hit = _packed_weights.get(key)
    if hit is None or hit[0]() is not w or hit[1] != w._version:
        packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACK_ROWS)
        _packed_weights[key] = (weakref.ref(w, lambda _, key=key: _packed_weights.pop(key, None)), w._version, packed)
        return packed
    return hit[2]


def _onednn_packed(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """oneDNN's product against the weight packed once (packed_weight): the layout its small-row kernels stream
    fastest, where torch's linear re-blocks the row-major weight on every call."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight(w), None, "none", [], "")


LINEAR_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "linear": _linear, "vocab_blocks": _vocab_blocks, "transposed_blocks": _transposed_blocks}
if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
    LINEAR_KERNELS["onednn_packed"] = _onednn_packed
TUNED_ROWS = 64  # up to this many rows (decode steps) each row count is measured on its own
LARGE_ROWS = 128  # calls with more rows (prompt, reference, judge passes) use the choice measured at this many
_LARGE_KERNELS = ("linear", "onednn_packed")  # above TUNED_ROWS the blocked orders only re-slice the same product
_kernel_choice: dict[tuple, str] = {}  # (rows, out, in, dtype) -> the fastest kernel measured on this machine


def linear_kernel(rows: int, w: torch.Tensor) -> str:
    """The fastest of LINEAR_KERNELS for `rows` rows against weight w, measured once per shape (best of three runs
    each, wall time) and remembered; a row count above TUNED_ROWS is measured as LARGE_ROWS rows, among linear and
    the packed product. A decode step multiplies a few rows by every weight (gemma: 671 MB of LM head and 400 MB of
    decoder weights in fp32): bound by reading the weights, yet torch's linear call streams them at a third to a
    half of what the packed layout gets here, and which product streams fastest depends on the row count, the
    shape and the CPU's libraries. All compute the same dot products over the input size, in orders that differ,
    so they agree to float rounding. A kernel that fails here (a build without oneDNN's packing) is left out."""
    large = rows > TUNED_ROWS
    rows = LARGE_ROWS if large else rows
    key = (rows, *w.shape, w.dtype)
    if key not in _kernel_choice:
        w = w.detach()  # a new tensor: a packed copy made to measure is dropped with it, not kept for the weight
        x = w[:rows, :].clone() if w.shape[0] >= rows else w.new_ones(rows, w.shape[1])  # no draw from the RNG
        best: tuple[float, str] = (float("inf"), "linear")
        for name, kernel in LINEAR_KERNELS.items():
            if large and name not in _LARGE_KERNELS:
                continue
            try:
                kernel(x, w)
            except RuntimeError:
                continue
            for _ in range(2 if large else 3):
                t0 = time.perf_counter()
                kernel(x, w)
                best = min(best, (time.perf_counter() - t0, name))
        _kernel_choice[key] = best[1]  # the packed copy made to measure went with the detached w
    return _kernel_choice[key]


@contextmanager
def tuned_linears(model: Any, enabled: bool = True) -> Iterator[None]:
    """Within it, every nn.Linear of the model on CPU (the LM head, the decoder's projections, a LoRA adapter's base
    layers and factors) runs, for calls without gradient, the kernel linear_kernel measured fastest for that row
    count (decode steps) or for many rows (prompt and scoring passes) and that shape. A call that takes a gradient,
    any layer on a GPU, and every layer when not `enabled`, run their own forward; nested, the outer one holds."""
    linears = [m for m in model.modules() if enabled and type(m) is torch.nn.Linear and m.weight.device.type == "cpu"
               and "forward" not in m.__dict__]

    def tuned(module: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(inp: torch.Tensor) -> torch.Tensor:
            x = inp.reshape(-1, inp.shape[-1])
            if x.shape[0] == 0 or torch.is_grad_enabled():
                return torch.nn.functional.linear(inp, module.weight, module.bias)
            out = LINEAR_KERNELS[linear_kernel(x.shape[0], module.weight)](x.contiguous(), module.weight)
            if module.bias is not None:
                out += module.bias
            return out.view(*inp.shape[:-1], module.weight.shape[0])
        return forward

    for m in linears:
        m.forward = tuned(m)
    try:
        yield
    finally:
        for m in linears:
            del m.forward  # the class's own forward again


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
           policy_version: int = 0, max_prompt_tokens: int = 512, min_new_tokens: int = 1,
           share_prompts: bool = True, tune_linears: bool = True, stop: Iterable[str] = ()) -> Experience:
    """Sample n responses per prompt with their behaviour log-probs, taken from the logits generate computed.

    A response ends at EOS, at the token that completes one of the `stop` texts (cut_at_stop_texts; generate
    stops a row there), or after max_new_tokens.

    They are exact log pi(a|s) at `temperature` when top_p == 1 and top_k == 0; with truncation the
    sampling distribution differs from pi and the recorded numbers are pi's, which is what PPO's ratio uses.
    With share_prompts, each prompt is encoded once and its KV cache copied to its n samples
    (shared_prompt_cache); False runs the prompt n times, as generate alone does. With tune_linears, each linear
    layer of the decode steps runs the product measured fastest for its shape and the batch's row count on CPU
    (tuned_linears).
    """
    from transformers import LogitsProcessorList, StoppingCriteriaList

    greedy = temperature == 0
    enc, group_ids = encode_prompts(tokenizer, prompts, samples_per_prompt, max_prompt_tokens)
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    if seed is not None:
        torch.manual_seed(seed)
    stop_texts, stop = [t for t in stop if t], eos_ids(model, tokenizer)
    sampler = _Sampler(temperature, top_p, top_k, stop, min_new_tokens)  # unused when greedy: generate's argmax
    with tuned_linears(model, tune_linears):
        cache = shared_prompt_cache(model, enc, samples_per_prompt) if share_prompts else None
        out = model.generate(**enc, **{cache_arg(): cache}, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=stop, pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                             output_logits=greedy, min_new_tokens=min_new_tokens if greedy else None,
                             logits_processor=LogitsProcessorList([] if greedy else [sampler]),
                             stopping_criteria=StoppingCriteriaList(
                                 [StopTexts(tokenizer, stop_texts, enc["input_ids"].shape[1])] if stop_texts else []))
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
    mask, texts = cut_at_stop_texts(tokenizer, response, response_mask_from(response, stop, tokenizer.pad_token_id),
                                    stop_texts)
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    input_ids = torch.cat([enc["input_ids"], response], dim=1)
    attention_mask = torch.cat([enc["attention_mask"], mask], dim=1)
    return Experience(input_ids=input_ids.cpu(), attention_mask=attention_mask.cpu(), response_mask=mask.cpu(),
                      behaviour_logprobs=(logprobs * mask).cpu(), prompts=[p for p in prompts for _ in range(samples_per_prompt)],
                      responses=texts, group_ids=group_ids, policy_version=policy_version)


@torch.no_grad()
def shared_prompt_cache(model: Any, enc: Any, n: int) -> Any:
    """The KV cache of every prompt but its last token, computed once per prompt and repeated for its n samples
    (`enc` holds each prompt n times in a row, as encode_prompts makes it), or None where nothing is shared
    (n == 1, one-token prompts). generate then feeds each row only its last prompt token before decoding: the
    prompt pass, the largest matmuls of a rollout, shrinks n-fold. Positions follow the attention mask as
    generate's own (left padding starts at 0), so the cache is the one generate would have built itself."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if n < 2 or ids.shape[1] < 2:
        return None
    ids, mask = ids[::n, :-1], mask[::n, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = returned_cache(model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                 logits_to_keep=NO_LOGITS))
    cache.batch_repeat_interleave(n)
    return cache


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
