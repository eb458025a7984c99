"""Rollout actor: samples responses with the current policy weights and records their version."""
from __future__ import annotations

import time
from typing import Any

import ray

from actors.common import keep_user_error, pid, setup_process
from xrlhf.config import Config
from xrlhf.experience import Experience
from xrlhf.generation import sample
from xrlhf.models import load_policy, load_trainable_state


@ray.remote
class RolloutActor:
    """Holds a frozen copy of the policy; weights arrive from the learner after each update."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = Config.model_validate(cfg)
        setup_process(self.cfg, self.cfg.resources.rollout, "rollout")
        self.vllm = self.cfg.rollout.backend == "vllm"
        with keep_user_error(self):
            if self.vllm:
                from xrlhf.vllm_rollout import VLLMSampler  # vllm is installed only where this backend runs

                self.sampler = VLLMSampler.from_config(self.cfg)
            else:
                self.model, self.tokenizer = load_policy(self.cfg.model, trainable=False)
        self.version = 0

    def set_weights(self, state: dict, version: int) -> int:
        """Load the learner's adapter (or full weights); returns the version now in use."""
        if self.vllm:
            self.sampler.set_adapter(state, version)
        else:
            load_trainable_state(self.model, state)
        self.version = version
        return version

    def generate(self, prompts: list[str], seed: int) -> tuple[Experience, float]:
        """n samples per prompt with their behaviour log-probs; returns (experience, seconds)."""
        r = self.cfg.rollout
        t0 = time.perf_counter()
        if self.vllm:
            exp = self.sampler.sample(prompts, r.samples_per_prompt, r.max_new_tokens, r.temperature, r.top_p, r.top_k,
                                      seed=seed, policy_version=self.version,
                                      max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        else:
            exp = sample(self.model, self.tokenizer, prompts, r.samples_per_prompt, r.max_new_tokens, r.temperature,
                         r.top_p, r.top_k, seed=seed, policy_version=self.version,
                         max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        return exp, time.perf_counter() - t0

    def validate(self, prompts: list[str]) -> tuple[list[str], list[int]]:
        """One greedy answer per held-out prompt with the current weights (eval.max_new_tokens): (texts, lengths)."""
        e = self.cfg.eval
        if self.vllm:
            exp = self.sampler.sample(prompts, 1, e.max_new_tokens, 0.0, seed=0, policy_version=self.version,
                                      max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        else:
            exp = sample(self.model, self.tokenizer, prompts, 1, e.max_new_tokens, temperature=0.0, seed=0,
                         policy_version=self.version, max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        return exp.responses, [int(n) for n in exp.response_mask.sum(-1)]

    def pid(self) -> int:
        return pid(self)
