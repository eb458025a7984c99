"""PPO: a critic, GAE, the clipped surrogate, several epochs of minibatches."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xrlhf.algorithms.ppo import compute_gae, explained_variance, policy_loss, token_level_rewards, value_loss
from xrlhf.config import Config
from xrlhf.learners.common import PolicyLearner
from xrlhf.ops import masked_mean, masked_whiten, response_logprobs
from xrlhf.policy.experience import Experience
from xrlhf.policy.models import load_policy, load_trainable_state, trainable_state


class ValueHead(torch.nn.Module):
    """V(s_t) = w·h_t + b on the last hidden state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, R, H] -> [B, R]
        return self.linear(h.float()).squeeze(-1)


class PPOLearner(PolicyLearner):
    """Per-token reward r_t = −β·KL_t (+ judge score on the last token); GAE(γ, λ); clipped policy and value losses."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        hidden = self.trainer.model.config.get_text_config().hidden_size
        self.critic_model = None
        if cfg.algorithm.ppo.critic == "separate":
            # A second trunk for the critic: its own LoRA adapter (or weights) on a fresh copy of the base.
            self.critic_model, _ = load_policy(cfg.model)
            self.trainer.add_params([p for p in self.critic_model.parameters() if p.requires_grad])
        self.value_head = ValueHead(hidden).to(self.trainer.device)
        self.trainer.add_params(list(self.value_head.parameters()))
        # The first minibatch's update forward, run before any step, gives its rows' old values (detached),
        # so the no-grad old-values pass covers only the other rows; with one minibatch it is skipped
        # (BENCHMARKS.md, peer comparison). False runs the no-grad pass over every row.
        self.reuse_update_forward = True

    def _forward(self, exp: Experience, idx: list[int]):
        """Policy log-probs, entropy and values for rows idx."""
        shared = self.critic_model is None
        fwd = self.trainer.forward(exp, idx, return_entropy=True, return_hidden=shared,
                                   entropy_grad=self.cfg.algorithm.ppo.ent_coef > 0)
        if shared:
            return fwd, self.value_head(fwd.hidden)
        ids, att = exp.input_ids[idx].to(self.trainer.device), exp.attention_mask[idx].to(self.trainer.device)
        critic = response_logprobs(self.critic_model, ids, att, exp.response_len, return_hidden=True)
        return fwd, self.value_head(critic.hidden)

    def _update(self, exp: Experience) -> tuple[dict[str, float], list[float]]:
        """Epochs of minibatch updates on one batch; returns (metrics, per-sample mean advantages)."""
        alg, pc = self.cfg.algorithm, self.cfg.algorithm.ppo
        mask = exp.response_mask.float()  # [B, R]
        B = mask.shape[0]
        old_logprobs = exp.behaviour_logprobs.float()
        rng = np.random.default_rng(self.cfg.seed + self.trainer.version)
        first_order = [int(i) for i in rng.permutation(B)]  # epoch 0's minibatch order
        old_values = torch.empty(B, mask.shape[1])
        first_pass, rest = None, list(range(B))
        if self.reuse_update_forward:
            # Before any step the first minibatch's values are the old values exactly: the update's
            # forward for it (graph kept) stands in for its rows of the no-grad pass.
            first = _chunks(first_order, pc.minibatch_size)[0]
            first_pass = self._forward(exp, first)
            old_values[first] = first_pass[1].detach().float().cpu()
            rest = sorted(set(rest) - set(first))
        with torch.no_grad():
            for idx in _chunks(rest, pc.minibatch_size):
                old_values[idx] = self._forward(exp, idx)[1].float().cpu()
        old_values = old_values * mask
        kl = exp.token_kl()
        rewards = token_level_rewards(exp.rewards.float(), kl, mask, alg.kl_coef)  # [B, R]
        advantages, returns = compute_gae(rewards, old_values, mask, pc.gamma, pc.lam)
        if pc.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "ent", "clipfrac", "approx_kl", "grad_norm")}
        stop = False
        for epoch in range(pc.epochs):
            order = first_order if epoch == 0 else rng.permutation(B)
            for idx in _chunks(list(order), pc.minibatch_size):
                fwd, values = first_pass if first_pass is not None else self._forward(exp, idx)
                first_pass = None
                dev = values.device
                m = mask[idx].to(dev)
                pg_loss, pstats = policy_loss(fwd.logprobs, old_logprobs[idx].to(dev), advantages[idx].to(dev), m, pc.clip_range)
                v_loss, _ = value_loss(values, old_values[idx].to(dev), returns[idx].to(dev), m, pc.value_clip_range)
                entropy = masked_mean(fwd.entropy, m)
                loss = pg_loss + pc.vf_coef * v_loss - pc.ent_coef * entropy
                grad_norm, _ = self.trainer.step(loss)
                for k, v in (("pg", pg_loss), ("vf", v_loss), ("ent", entropy), ("clipfrac", pstats["clipfrac"]),
                             ("approx_kl", pstats["approx_kl"]), ("grad_norm", grad_norm)):
                    stats[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))
                if pc.target_kl is not None and float(pstats["approx_kl"]) > 1.5 * pc.target_kl:
                    stop = True  # the policy moved too far from the sampler: stop this batch early
                    break
            if stop:
                break
        seq_adv = (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        metrics = {"loss/policy": _mean(stats["pg"]), "loss/value": _mean(stats["vf"]), "entropy/mean": _mean(stats["ent"]),
                   "ppo/clipfrac": _mean(stats["clipfrac"]), "ppo/approx_kl": _mean(stats["approx_kl"]),
                   "ppo/explained_variance": float(explained_variance(old_values, returns, mask)),
                   "ppo/early_stop": stop, "ppo/minibatches": len(stats["pg"]), "grad_norm": _mean(stats["grad_norm"]),
                   "lr": alg.lr}
        return metrics, seq_adv.tolist()

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"value_head": self.value_head.state_dict()}
        if self.critic_model is not None:
            state["critic"] = trainable_state(self.critic_model)
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.value_head.load_state_dict(state["value_head"])
        if self.critic_model is not None:
            load_trainable_state(self.critic_model, state["critic"])


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [[int(i) for i in items[i:i + size]] for i in range(0, len(items), size)]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
