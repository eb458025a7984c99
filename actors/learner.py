"""Learner actor: the only algorithm-specific actor. The controller calls the same methods on any learner."""
from __future__ import annotations

import time
from typing import Any

import ray
import torch

from actors.common import keep_user_error, pid, setup_process
from xrlhf.config import Config
from xrlhf.experience import Experience
from xrlhf.learners import make_learner


@ray.remote
class LearnerActor:
    """Wraps PPOLearner or ReinforceLearner (chosen by config) behind one set of methods."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = Config.model_validate(cfg)
        setup_process(self.cfg, self.cfg.resources.learner, "learner")
        with keep_user_error(self):
            self.learner = make_learner(self.cfg)

    def update(self, exp: Experience) -> tuple[dict[str, float], list[float], float]:
        """One learner update; returns (metrics, per-sample advantages, seconds)."""
        t0 = time.perf_counter()
        metrics, adv = self.learner.update(exp)
        return metrics, adv, time.perf_counter() - t0

    def reference_logprobs(self, exp: Experience) -> tuple[torch.Tensor, float]:
        """Colocated reference: the learner's own base weights with the adapter off."""
        t0 = time.perf_counter()
        return self.learner.trainer.reference_logprobs(exp), time.perf_counter() - t0

    def weights(self) -> tuple[dict, int]:
        return self.learner.trainer.weights()

    def version(self) -> int:
        return self.learner.trainer.version

    def state(self) -> dict[str, Any]:
        return self.learner.state()

    def load_state(self, state: dict[str, Any]) -> int:
        self.learner.load_state(state)
        return self.learner.trainer.version

    def save_adapter(self, path: str) -> None:
        self.learner.trainer.save_adapter(path)

    def pid(self) -> int:
        return pid(self)
