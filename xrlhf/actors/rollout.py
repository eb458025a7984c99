"""Rollout actor: samples responses with the current policy weights and records their version."""
from __future__ import annotations

import time
from typing import Any

import ray

from xrlhf.actors.base import ActorBase
from xrlhf.driver.step import Rollout
from xrlhf.policy.experience import Experience
from xrlhf.policy.generation import sample
from xrlhf.policy.models import load_policy, load_trainable_state


@ray.remote
class RolloutActor(ActorBase):
    """Holds a frozen copy of the policy; weights arrive from the learner after each update."""

    role = "rollout"

    def build(self) -> None:
        self.version = 0
        self.vllm = self.cfg.rollout.backend == "vllm"
        if self.vllm:
            from xrlhf.policy.vllm_rollout import VLLMSampler  # vllm is installed only where this backend runs

            self.sampler = VLLMSampler.from_config(self.cfg)
        else:
            self.model, self.tokenizer = load_policy(self.cfg.model, trainable=False)

    def set_weights(self, state: dict, version: int) -> int:
        """Load the learner's adapter (or full weights); returns the version now in use."""
        if self.vllm:
            self.sampler.set_adapter(state, version)
        else:
            load_trainable_state(self.model, state)
        self.version = version
        return version

    def _sample(self, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float = 1.0,
                top_k: int = 0, seed: int = 0) -> Experience:
        """n samples per prompt from the current weights, by vLLM or transformers' generate."""
        if self.vllm:
            draw = self.sampler.sample
        else:
            def draw(*args: Any, **kwargs: Any) -> Experience:
                return sample(self.model, self.tokenizer, *args, tune_linears=self.cfg.model.tune_linears, **kwargs)
        return draw(prompts, n, max_new_tokens, temperature, top_p, top_k, seed=seed, policy_version=self.version,
                    max_prompt_tokens=self.cfg.data.max_prompt_tokens, stop=self.cfg.rollout.stop)

    def generate(self, prompts: list[str], seed: int) -> Rollout:
        """rollout.samples_per_prompt samples per prompt with their behaviour log-probs."""
        r, t0, started = self.cfg.rollout, time.perf_counter(), time.time()
        exp = self._sample(prompts, r.samples_per_prompt, r.max_new_tokens, r.temperature, r.top_p, r.top_k, seed)
        return Rollout(exp, time.perf_counter() - t0, started, time.time())

    def validate(self, prompts: list[str]) -> tuple[list[str], list[int]]:
        """One greedy answer per held-out prompt with the current weights (eval.max_new_tokens): (texts, lengths)."""
        exp = self._sample(prompts, 1, self.cfg.eval.max_new_tokens, 0.0)
        return exp.responses, exp.lengths()
