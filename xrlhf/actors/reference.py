"""Reference actor: log-probabilities of the sampled tokens under the frozen base model."""
from __future__ import annotations

import contextlib
import time

import ray
import torch

from xrlhf.actors.base import ActorBase
from xrlhf.driver.step import Reference
from xrlhf.ops import response_logprobs
from xrlhf.policy.experience import Experience
from xrlhf.policy.generation import tuned_linears
from xrlhf.policy.models import load_policy, reference_mode


@ray.remote
class ReferenceActor(ActorBase):
    """The base weights; with LoRA the adapter is attached but disabled, exactly as the learner sees it.

    Nothing sends it the learner's weights (xrlhf.driver.graph syncs the rollouts only) and a restart loads the base
    again, so without LoRA its model is the base as loaded.
    """

    role = "reference"

    def build(self) -> None:
        self.model, _ = load_policy(self.cfg.model, trainable=False)
        self.device = next(self.model.parameters()).device

    @torch.no_grad()
    def reference_logprobs(self, exp: Experience) -> Reference:
        t0 = time.perf_counter()
        adapter_off = reference_mode(self.model) if self.cfg.model.lora.enabled else contextlib.nullcontext()
        with adapter_off, tuned_linears(self.model, self.cfg.model.tune_linears):
            lp = response_logprobs(self.model, exp.input_ids.to(self.device), exp.attention_mask.to(self.device),
                                   exp.response_len, temperature=self.cfg.rollout.temperature).logprobs
        return Reference(lp.cpu(), time.perf_counter() - t0)
