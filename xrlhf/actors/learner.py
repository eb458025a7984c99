"""Learner actor: the only algorithm-specific actor. The controller calls the same methods on any learner."""
from __future__ import annotations

import time
from typing import Any

import ray

from xrlhf.actors.base import ActorBase
from xrlhf.driver.step import Reference, UpdateResult
from xrlhf.learners import make_learner
from xrlhf.policy.experience import Experience


@ray.remote
class LearnerActor(ActorBase):
    """A PPOLearner or ReinforceLearner (chosen by config) through the Learner protocol, nothing else."""

    role = "learner"

    def build(self) -> None:
        self.learner = make_learner(self.cfg)

    def update(self, exp: Experience) -> UpdateResult:
        t0, started = time.perf_counter(), time.time()
        metrics, advantages = self.learner.update(exp)
        return UpdateResult(metrics, advantages, time.perf_counter() - t0, started, time.time())

    def reference_logprobs(self, exp: Experience) -> Reference:
        """Colocated reference: the learner's own base weights with the adapter off (without LoRA, its frozen copy)."""
        t0 = time.perf_counter()
        return Reference(self.learner.reference_logprobs(exp), time.perf_counter() - t0)

    def weights(self) -> tuple[dict, int]:
        return self.learner.weights()

    def version(self) -> int:
        return self.learner.version

    def state(self) -> dict[str, Any]:
        return self.learner.state()

    def load_state(self, state: dict[str, Any]) -> int:
        self.learner.load_state(state)
        return self.learner.version

    def save_adapter(self, path: str) -> None:
        self.learner.save_adapter(path)
