"""PPO for language models: per-token rewards, GAE, the clipped policy loss and the value loss.

All tensors are response-aligned `[B, R]` with right padding; `response_mask` is 1 on real tokens.
"""

from __future__ import annotations

import torch

from xrlhf.ops import masked_mean, masked_var


def token_level_rewards(
    scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards `[B, R]`: -kl_coef·KL on every response token, plus the score on the last one."""
    mask = response_mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask  # [B, R]
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B] index of the last real response token
    return rewards.scatter_add(1, last.unsqueeze(-1), scores.to(kl.dtype).unsqueeze(-1))


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, both `[B, R]` and 0 on padding.

    The episode ends at the last real token: nothing is bootstrapped from values past it.
    """
    mask = response_mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask  # [B, R]
    R = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[:, 0])  # [B]
    for t in reversed(range(R)):
        nextvalues = values[:, t + 1] if t + 1 < R else torch.zeros_like(values[:, t])
        # δ_t = r_t + γ V(s_{t+1}) - V(s_t)
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        # A_t = δ_t + γλ A_{t+1}
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages[:, t] = lastgaelam
    returns = advantages + values
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate loss, a masked mean over response tokens, and stats `clipfrac`, `approx_kl`."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)  # [B, R]
    # L = E[max(-A·r, -A·clip(r, 1-ε, 1+ε))]
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1).abs() > clip_range).float(), response_mask)
        # KL(old || new) ≈ E[(r - 1) - log r], Schulman's k3 estimator
        approx_kl = masked_mean((ratio - 1) - log_ratio, response_mask)
    return pg_loss, {"clipfrac": clipfrac.item(), "approx_kl": approx_kl.item()}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range_value: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Value loss ½·(V - R)², clipped around `old_values` unless `clip_range_value` is None."""
    v_loss_unclipped = (values - returns) ** 2  # [B, R]
    if clip_range_value is None:
        return 0.5 * masked_mean(v_loss_unclipped, response_mask), {"vf_clipfrac": 0.0}
    # L_V = ½ max((V - R)², (V_old + clip(V - V_old, -ε, ε) - R)²)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    v_loss_clipped = (v_clipped - returns) ** 2
    v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), response_mask)
    with torch.no_grad():
        vf_clipfrac = masked_mean((v_loss_clipped > v_loss_unclipped).float(), response_mask)
    return v_loss, {"vf_clipfrac": vf_clipfrac.item()}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over masked-in tokens; NaN when the returns have no variance."""
    var_returns = masked_var(returns, mask, unbiased=False)
    if var_returns.item() == 0:
        return float("nan")
    return (1 - masked_var(returns - values, mask, unbiased=False) / var_returns).item()
