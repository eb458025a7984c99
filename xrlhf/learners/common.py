"""What every learner shares: the trainable policy, its optimiser, a guarded step, weights, state, and the
PolicyLearner base that gives both algorithms one rule for versions and skipped updates."""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from xrlhf.config import Config
from xrlhf.ops import response_logprobs
from xrlhf.policy.experience import Experience
from xrlhf.policy.generation import tuned_linears
from xrlhf.policy.models import frozen_copy, load_policy, load_trainable_state, reference_mode, trainable_state

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Too many consecutive updates had a NaN or Inf loss or gradient."""


class PolicyTrainer:
    """The policy model, its optimiser and a step that refuses non-finite updates."""

    def __init__(self, cfg: Config, extra_params: list[torch.nn.Parameter] | None = None):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.model, self.tokenizer = load_policy(cfg.model)
        # Full fine-tuning has no adapter to switch off: the colocated reference is a copy of the base weights taken
        # here, before any update, and outside state() (a resumed run keeps the base, not the resumed policy).
        colocated_copy = cfg.resources.colocate_reference and not cfg.model.lora.enabled
        self.reference = frozen_copy(self.model) if colocated_copy else None
        if cfg.model.gradient_checkpointing:
            # transformers 5.25 renamed it; the old name still works there and is all older releases have
            enable = getattr(self.model, "activation_checkpointing_enable", None) or \
                self.model.gradient_checkpointing_enable
            enable()
        self.device = next(self.model.parameters()).device
        self.extra_params = list(extra_params or [])
        params = [p for p in self.model.parameters() if p.requires_grad] + self.extra_params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.algorithm.lr, weight_decay=cfg.algorithm.weight_decay)
        self.version = 0
        self.nonfinite_in_a_row = 0
        self.skipped_updates = 0
        self.applied_steps = 0  # optimiser steps taken (an update that took none is skipped)
        self.last_nonfinite = "loss"
        self.step_attempts = 0  # counts step() calls, for algorithm.debug_inject_nonfinite

    def add_params(self, params: list[torch.nn.Parameter]) -> None:
        """Register parameters created after the policy (e.g. a value head) with the optimiser."""
        self.extra_params += params
        self.optimizer.add_param_group({"params": params})

    def forward(self, exp: Experience, idx: list[int] | None = None, model: Any = None, **kw: Any):
        """Policy forward on the rows `idx` of `exp` (all rows when None); `model` runs another (the reference)."""
        model = self.model if model is None else model
        ids, att = exp.input_ids, exp.attention_mask
        if idx is not None:
            ids, att = ids[idx], att[idx]
        with tuned_linears(model, self.cfg.model.tune_linears):  # passes without gradient only
            return response_logprobs(model, ids.to(self.device), att.to(self.device), exp.response_len,
                                     temperature=self.cfg.rollout.temperature or 1.0, **kw)

    def step(self, loss: torch.Tensor) -> tuple[float, bool]:
        """Backward, clip, step. A non-finite loss or gradient skips the update; returns (grad_norm, applied)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_attempts in self.cfg.algorithm.debug_inject_nonfinite:
            log.warning("fault injection: step attempt %d gets a NaN loss", self.step_attempts)
            loss = loss * float("nan")
        self.step_attempts += 1
        if not torch.isfinite(loss):
            return self._skip("loss", float("nan"))
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.algorithm.max_grad_norm))
        if not np.isfinite(grad_norm):
            return self._skip("gradient", grad_norm)
        self.optimizer.step()
        self.applied_steps += 1
        return grad_norm, True

    def _skip(self, what: str, grad_norm: float) -> tuple[float, bool]:
        self.optimizer.zero_grad(set_to_none=True)
        self.last_nonfinite = what
        log.warning("non-finite %s: optimiser step skipped", what)
        return grad_norm, False

    def end_update(self, applied: bool) -> None:
        """Count an update that applied no step (every one non-finite); stop after
        algorithm.max_nonfinite_in_a_row of them in a row. An update that applied a step advances the version."""
        if applied:
            self.version += 1
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        self.skipped_updates += 1
        log.warning("non-finite %s: update skipped (%d in a row)", self.last_nonfinite, self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.cfg.algorithm.max_nonfinite_in_a_row:
            raise NonFiniteError(f"{self.nonfinite_in_a_row} consecutive updates had a non-finite "
                                 f"{self.last_nonfinite}; stopping (lower algorithm.lr or check the reward)")

    @torch.no_grad()
    def reference_logprobs(self, exp: Experience) -> torch.Tensor:
        """Reference log-probs `[B, R]` under the base weights: the adapter off, or without LoRA the frozen copy."""
        if self.reference is not None:
            return self.forward(exp, model=self.reference).logprobs.cpu()
        with reference_mode(self.model):
            return self.forward(exp).logprobs.cpu()

    def weights(self) -> tuple[dict[str, torch.Tensor], int]:
        """The trainable weights (LoRA adapter or full) and their version, for the rollout workers."""
        return trainable_state(self.model), self.version

    def state(self) -> dict[str, Any]:
        """Everything a resume needs besides the adapter files."""
        return {"policy": trainable_state(self.model), "optimizer": self.optimizer.state_dict(),
                "version": self.version, "skipped_updates": self.skipped_updates,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}

    def load_state(self, state: dict[str, Any]) -> None:
        load_trainable_state(self.model, state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = state["version"]
        self.skipped_updates = state.get("skipped_updates", 0)
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def save_adapter(self, path: str) -> None:
        """An adapter folder loadable with PeftModel.from_pretrained (full weights without LoRA)."""
        self.model.save_pretrained(path)


class PolicyLearner:
    """The Learner protocol (xrlhf.learners.Learner) on a PolicyTrainer; an algorithm writes `_update` only.

    One rule for every algorithm: an update advances the policy version when at least one of its optimiser steps
    was applied, and reports `skipped_update` when none was (every step had a non-finite loss or gradient);
    algorithm.max_nonfinite_in_a_row skipped updates in a row stop the run, however many steps each has.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.trainer = PolicyTrainer(cfg)

    def _update(self, exp: Experience) -> tuple[dict[str, float], list[float]]:
        """The algorithm's optimiser steps on one batch: (metrics, a mean advantage per sample)."""
        raise NotImplementedError

    def update(self, exp: Experience) -> tuple[dict[str, float], list[float]]:
        before = self.trainer.applied_steps
        staleness = self.trainer.version - exp.policy_version  # updates since the weights that sampled exp
        metrics, advantages = self._update(exp)
        applied = self.trainer.applied_steps > before
        metrics["skipped_update"] = not applied
        metrics["async/staleness"] = staleness
        self.trainer.end_update(applied)
        return metrics, advantages

    @property
    def version(self) -> int:
        return self.trainer.version

    def weights(self) -> tuple[dict[str, torch.Tensor], int]:
        return self.trainer.weights()

    def reference_logprobs(self, exp: Experience) -> torch.Tensor:
        return self.trainer.reference_logprobs(exp)

    def save_adapter(self, path: str) -> None:
        self.trainer.save_adapter(path)

    def state(self) -> dict[str, Any]:
        return {"trainer": self.trainer.state(), **self._extra_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._load_extra_state(state)
        self.trainer.load_state(state["trainer"])

    def _extra_state(self) -> dict[str, Any]:
        """What the algorithm keeps besides the policy and optimiser (a value head, a baseline)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass
