"""REINFORCE with a baseline: one return per sequence, A = G - b, loss -A·log π(y|x).

Baselines share one call signature `(returns [B], group_ids) -> [B]` so a config can name any of them.
"""

from __future__ import annotations

from typing import Callable

import torch

from xrlhf.ops import masked_mean

Baseline = Callable[[torch.Tensor, list[int]], torch.Tensor]


def sequence_returns(
    scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-sequence return `[B]`: score minus kl_coef times the KL summed over the response."""
    # G = score - β Σ_t KL_t
    return scores - kl_coef * (kl * response_mask.to(kl.dtype)).sum(-1)


def baseline_batch_mean(returns: torch.Tensor, group_ids: list[int]) -> torch.Tensor:
    """The mean return of the whole batch, for every sample (group_ids unused)."""
    return returns.mean().expand_as(returns)


def baseline_loo(returns: torch.Tensor, group_ids: list[int]) -> torch.Tensor:
    """Leave-one-out: the mean return of the other samples of the same prompt (RLOO).

    A sample whose prompt has no other (a judge dropped them) gets the mean return of the rest of the batch, and 0
    when it is the batch's only sample: either way no sample's baseline holds its own return.
    """
    _, group = torch.unique(torch.as_tensor(group_ids, device=returns.device), return_inverse=True)  # [B]
    counts = torch.bincount(group)  # [G]
    sums = torch.zeros(len(counts), dtype=returns.dtype, device=returns.device).index_add(0, group, returns)
    # b_i = (Σ_{j in group(i)} G_j - G_i) / (n_group - 1)
    same_prompt = (sums[group] - returns) / (counts[group] - 1).clamp(min=1).to(returns.dtype)
    # a lone sample: b_i = (Σ_j G_j - G_i) / (B - 1)
    rest_of_batch = (returns.sum() - returns) / max(len(returns) - 1, 1)
    return torch.where(counts[group] > 1, same_prompt, rest_of_batch)


class EmaBaseline:
    """An exponential moving average of batch-mean returns, kept across steps and updated once per call (one
    optimiser step).

    `init` is the baseline the first batch sees: None its own mean, 0.0 zero (the study's MovingAverageBaseline,
    whose first batch's advantages are the raw returns). Either way the first update sets the average to that
    batch's mean, as the study's `if not self.initialized: self.value = batch_mean` does; later updates fold
    each batch in with `decay` (0.99 in the study)."""

    def __init__(self, decay: float = 0.9, init: float | None = None):
        self.decay = decay
        self.value: float | None = init
        self.updates = 0

    def __call__(self, returns: torch.Tensor, group_ids: list[int] | None = None) -> torch.Tensor:
        """The average before this batch, for every sample; then folds this batch in."""
        if self.value is None:
            self.value = returns.mean().item()
        baseline = torch.full_like(returns, self.value)
        self.update(returns)
        return baseline

    def update(self, returns: torch.Tensor) -> None:
        """Fold a batch's mean return into the average (the first update sets it)."""
        mean = returns.mean().item()
        # b ← decay·b + (1 - decay)·mean(G); the first update: b ← mean(G)
        self.value = mean if self.updates == 0 else self.decay * self.value + (1 - self.decay) * mean
        self.updates += 1

    def state_dict(self) -> dict[str, float | None]:
        """The running average and how many updates it has had, for checkpoints."""
        return {"value": self.value, "updates": self.updates}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        """Restore the running average saved by `state_dict` (a checkpoint without `updates` has had one if it
        holds a value)."""
        self.value = state["value"]
        self.updates = int(state.get("updates", self.value is not None))


BASELINES: dict[str, Baseline | type[EmaBaseline]] = {
    "batch_mean": baseline_batch_mean,
    "loo": baseline_loo,
    "ema": EmaBaseline,
}


def make_baseline(name: str, decay: float = 0.9, init: float | None = None) -> Baseline:
    """The baseline called `name`; `decay` and `init` are used only by "ema", which is a fresh stateful object."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    if name == "ema":
        return EmaBaseline(decay, init)
    return BASELINES[name]


def reinforce_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    token_mean: bool = False,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE loss from response logprobs `[B, R]` and per-sequence advantages `[B]`; `weights` `[B, R]`
    (detached importance weights of off-policy tokens) scale each token's log-prob."""
    if weights is not None:
        logprobs = logprobs * weights
    if token_mean:
        # L = -Σ_{b,t} A_b log π(y_bt) / Σ_{b,t} mask: every token weighs the same, long answers weigh more
        return masked_mean(-advantages.unsqueeze(-1) * logprobs, response_mask)
    seq_logprobs = (logprobs * response_mask.to(logprobs.dtype)).sum(-1)  # [B] log π(y|x)
    # L = -(1/B) Σ_b A_b log π(y_b|x_b): the unbiased score-function estimator, one term per sequence
    return -(advantages * seq_logprobs).mean()
