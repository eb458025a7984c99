"""Learners: the only algorithm-specific code. Each implements the Learner protocol below; PolicyLearner
(learners/common.py) gives both the shared parts, so an algorithm writes its `_update` and little else.

Another algorithm is one new file here and one entry in the registry, config.LEARNERS (plus its own options in
config.py, if any): the registry sits in config so that the schema checks algorithm names against it.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import torch

from xrlhf.config import LEARNERS, Config
from xrlhf.policy.experience import Experience

__all__ = ["LEARNERS", "Learner", "make_learner"]


@runtime_checkable
class Learner(Protocol):
    """What the learner actor (and the in-process benchmarks) call; nothing reaches inside a learner."""

    def update(self, exp: Experience) -> tuple[dict[str, Any], list[float]]:
        """Optimiser steps on one batch with rewards and reference KL attached: (metrics with `skipped_update`,
        one mean advantage per sample). The version advances when at least one step was applied."""

    @property
    def version(self) -> int:
        """How many updates changed the policy: the version the rollout workers record per sample."""

    def weights(self) -> tuple[dict[str, torch.Tensor], int]:
        """The trainable weights (LoRA adapter or full) and their version."""

    def reference_logprobs(self, exp: Experience) -> torch.Tensor:
        """Log-probs of the sampled tokens under the base weights (the colocated reference) `[B, R]`."""

    def state(self) -> dict[str, Any]:
        """Everything a resume needs besides the adapter files."""

    def load_state(self, state: dict[str, Any]) -> None: ...

    def save_adapter(self, path: str) -> None:
        """An adapter folder loadable with PeftModel.from_pretrained (full weights without LoRA)."""


def make_learner(cfg: Config) -> Learner:
    """The learner class that config names; the one place an algorithm name maps to code."""
    module, cls = LEARNERS[cfg.algorithm.name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
