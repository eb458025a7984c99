"""Passes, tokens, logit rows and FLOPs a training step runs through a causal LM, counted by hooks on its modules.

The same hooks go on xrlhf's models and on TRL's, so both sides of bench/peer.py are counted one way, without
editing either library:
- a forward hook on the backbone (the decoder under the LM head; a PEFT wrapper calls the causal LM's `forward`
  directly, past its hooks, but the causal LM always calls its backbone as a module): one call is one forward
  pass, its tokens the positions it computes (input_ids.numel(): padding included, a KV cache's positions not);
- a forward hook on the LM head module: its rows are the positions whose logits are computed. TRL's fused LM head
  (trl.trainer.utils.add_fused_lm_head) projects through the head's weight without calling the module, so the
  one function that does it, `_ChunkedLogProbFunction.apply`, is wrapped for the counted window and its hidden
  rows counted the same way;
- generate, wrapped on the causal LM's instance, marks the passes it runs (prefill and decode steps);
- a post-accumulate-grad hook on the first trainable parameter: one call is one backward pass, and it carries the
  tokens and head rows of the forwards that ran with gradient since the previous one.

FLOPs, the matmul count (attention's score and value products, norms and the sampler left out, alike on both sides):
    forward  = 2 · N_body · tokens + 2 · H · V · head_rows
    backward = 2 · (N_body + N_body_trainable) · tokens_grad + 2 · H · V · head_rows_grad · (1 + head_trainable)
N_body is the backbone's parameters less the input embedding (a lookup, no matmul; a LoRA adapter's factors
included); H · V is the LM head's weight. A backward computes the input gradient through every layer (2 · N per
token) and the weight gradient only for trainable ones, so with every weight trained it is 2× the forward (4 · N per
token) and with a frozen base under LoRA about 1×.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Iterator

import torch

FIELDS = ("forward_passes", "forward_passes_grad", "generate_passes", "backward_passes", "tokens", "tokens_grad",
          "generate_tokens", "logit_rows", "logit_rows_grad", "generate_logit_rows", "flops_forward",
          "flops_backward", "flops_head")


def causal_lm(model: Any) -> Any:
    """The module that owns the LM head: a PEFT model's base model, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class WorkCounter:
    """Hooks on one or more causal LMs (a policy, its reference copy) adding into one set of counts."""

    def __init__(self, models: list[Any]):
        self.counts = dict.fromkeys(FIELDS, 0)
        self._pending = {"flops": 0, "head": 0}  # backward FLOPs owed by the forwards with gradient so far
        self._in_generate = 0
        self._handles: list[Any] = []
        self.models = []
        for m in models:
            if m is not None:
                self._attach(causal_lm(m))

    def _attach(self, lm: Any) -> None:
        backbone, head = lm.base_model, lm.get_output_embeddings()
        embed = {id(p) for p in backbone.get_input_embeddings().parameters()}
        body = [p for p in backbone.parameters() if id(p) not in embed]
        n_body, n_train = sum(p.numel() for p in body), sum(p.numel() for p in body if p.requires_grad)
        hv, head_trainable = head.weight.numel(), head.weight.requires_grad
        _HEADS[id(head.weight)] = (self, hv, head_trainable)
        self.models.append({"class": type(lm).__name__, "body_params": n_body, "body_trainable": n_train,
                            "head_params": hv, "head_trainable": head_trainable})

        def on_backbone(module: Any, args: tuple, kwargs: dict, out: Any) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            tokens = ids.numel() if ids is not None else kwargs["inputs_embeds"].shape[:-1].numel()
            self._forward(tokens, 2 * n_body * tokens, 2 * (n_body + n_train) * tokens, grad=torch.is_grad_enabled())

        def on_head(module: Any, args: tuple, out: Any) -> None:
            self._head(args[0].reshape(-1, args[0].shape[-1]).shape[0], hv, head_trainable)

        self._handles.append(backbone.register_forward_hook(on_backbone, with_kwargs=True))
        self._handles.append(head.register_forward_hook(on_head))
        trainable = next((p for p in lm.parameters() if p.requires_grad), None)
        if trainable is not None:
            self._handles.append(trainable.register_post_accumulate_grad_hook(lambda p: self._backward()))
        generate = lm.generate
        self._handles.append(_Restore(lm, "generate"))

        @functools.wraps(generate)
        def counted_generate(*a: Any, **kw: Any) -> Any:
            self._in_generate += 1
            try:
                return generate(*a, **kw)
            finally:
                self._in_generate -= 1

        lm.generate = counted_generate

    def _forward(self, tokens: int, flops: int, flops_backward: int, grad: bool) -> None:
        c = self.counts
        c["forward_passes"] += 1
        c["tokens"] += tokens
        c["flops_forward"] += flops
        if self._in_generate:
            c["generate_passes"] += 1
            c["generate_tokens"] += tokens
        if grad:
            c["forward_passes_grad"] += 1
            c["tokens_grad"] += tokens
            self._pending["flops"] += flops_backward

    def _head(self, rows: int, hv: int, trainable: bool) -> None:
        c = self.counts
        c["logit_rows"] += rows
        c["flops_forward"] += 2 * hv * rows
        c["flops_head"] += 2 * hv * rows
        if self._in_generate:
            c["generate_logit_rows"] += rows
        if torch.is_grad_enabled():
            c["logit_rows_grad"] += rows
            self._pending["flops"] += 2 * hv * rows * (1 + trainable)
            self._pending["head"] += 2 * hv * rows * (1 + trainable)

    def _backward(self) -> None:
        self.counts["backward_passes"] += 1
        self.counts["flops_backward"] += self._pending["flops"]
        self.counts["flops_head"] += self._pending["head"]
        self._pending = {"flops": 0, "head": 0}

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """The counts added since `before` (a snapshot)."""
        return {k: self.counts[k] - before[k] for k in FIELDS}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for key in [k for k, (owner, *_) in _HEADS.items() if owner is self]:
            del _HEADS[key]


_HEADS: dict[int, tuple[WorkCounter, int, bool]] = {}  # id(LM head weight) -> (its counter, H · V, trainable)


@contextmanager
def trl_fused_head() -> Iterator[None]:
    """Within it, the rows TRL's fused LM head projects go to the counter of the head whose weight it takes."""
    import trl.trainer.utils as tu

    original = tu._ChunkedLogProbFunction

    class Counted:
        @staticmethod
        def apply(hidden: torch.Tensor, weight: torch.Tensor, *rest: Any) -> Any:  # hidden: [rows, H]
            if id(weight) in _HEADS:
                counter, hv, trainable = _HEADS[id(weight)]
                counter._head(hidden.shape[0], hv, trainable)
            return original.apply(hidden, weight, *rest)

    tu._ChunkedLogProbFunction = Counted
    try:
        yield
    finally:
        tu._ChunkedLogProbFunction = original


class _Restore:
    """A handle that puts an instance attribute back as it was (absent: the class's own method shows through)."""

    def __init__(self, obj: Any, name: str):
        self.obj, self.name, self.had = obj, name, name in obj.__dict__
        self.value = obj.__dict__.get(name)

    def remove(self) -> None:
        if self.had:
            self.obj.__dict__[self.name] = self.value
        else:
            self.obj.__dict__.pop(self.name, None)
