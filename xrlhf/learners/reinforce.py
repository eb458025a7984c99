"""REINFORCE with a baseline: one update per batch on the sequence return."""
from __future__ import annotations

from typing import Any

import torch

from xrlhf.algorithms.reinforce import make_baseline, reinforce_loss, sequence_returns
from xrlhf.config import Config
from xrlhf.learners.common import PolicyLearner
from xrlhf.ops import masked_mean, masked_whiten
from xrlhf.policy.experience import Experience


class ReinforceLearner(PolicyLearner):
    """G = judge reward − β·ΣKL;  A = G − b;  loss = −A·log π(y|x)."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        rc = cfg.algorithm.reinforce
        self.baseline = make_baseline(rc.baseline, rc.ema_decay, 0.0 if rc.ema_init == "zero" else None)

    def _update(self, exp: Experience) -> tuple[dict[str, float], list[float]]:
        """One policy-gradient step; returns (metrics, per-sample advantages)."""
        alg = self.cfg.algorithm
        mask = exp.response_mask.float()
        kl = exp.token_kl()  # [B, R]
        returns = sequence_returns(exp.rewards.float(), kl, mask, alg.kl_coef)  # [B]
        baseline = self.baseline(returns, exp.group_ids)  # [B]
        advantages = returns - baseline
        if alg.reinforce.whiten_advantages and advantages.numel() > 1:
            advantages = masked_whiten(advantages, torch.ones_like(advantages))
        fwd = self.trainer.forward(exp, return_entropy=True, entropy_grad=False)  # entropy: a metric only
        dev = fwd.logprobs.device
        weights = None
        if exp.policy_version != self.trainer.version:
            # Sampled by older weights (algorithm.async_steps): per-token truncated importance weights
            # min(pi/mu, cap), detached, as in IMPALA's truncated rho (Espeholt et al. 2018): a token the policy
            # has since made less likely counts less; none counts more than `cap` times.
            ratio = torch.exp(fwd.logprobs.detach() - exp.behaviour_logprobs.to(dev).float())
            weights = ratio.clamp(max=alg.reinforce.importance_cap) * mask.to(dev)
        loss = reinforce_loss(fwd.logprobs, advantages.to(dev), mask.to(dev), weights=weights)
        grad_norm, _ = self.trainer.step(loss)
        metrics = {"loss/policy": float(loss.detach()), "reinforce/baseline": float(baseline.mean()),
                   "reinforce/return": float(returns.mean()), "entropy/mean": float(masked_mean(fwd.entropy.detach().cpu(), mask)),
                   "grad_norm": grad_norm, "lr": alg.lr}
        if weights is not None:
            metrics["async/importance_weight"] = float(masked_mean(weights.cpu(), mask))
        return metrics, advantages.tolist()

    def _extra_state(self) -> dict[str, Any]:
        return {"baseline": self.baseline.state_dict() if hasattr(self.baseline, "state_dict") else {}}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if hasattr(self.baseline, "load_state_dict"):
            self.baseline.load_state_dict(state["baseline"])
