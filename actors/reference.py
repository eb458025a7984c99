"""Reference actor: log-probabilities of the sampled tokens under the frozen base model."""
from __future__ import annotations

import time
from typing import Any

import ray
import torch

from actors.common import keep_user_error, pid, setup_process
from xrlhf.config import Config
from xrlhf.experience import Experience, response_logprobs
from xrlhf.models import load_policy, reference_mode


@ray.remote
class ReferenceActor:
    """The base weights; with LoRA the adapter is attached but disabled, exactly as the learner sees it."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = Config.model_validate(cfg)
        setup_process(self.cfg, self.cfg.resources.reference, "reference")
        with keep_user_error(self):
            self.model, _ = load_policy(self.cfg.model, trainable=False)
            self.device = next(self.model.parameters()).device

    @torch.no_grad()
    def reference_logprobs(self, exp: Experience) -> tuple[torch.Tensor, float]:
        """Reference log-probs `[B, R]` and the seconds it took."""
        t0 = time.perf_counter()
        with reference_mode(self.model):
            lp = response_logprobs(self.model, exp.input_ids.to(self.device), exp.attention_mask.to(self.device),
                                   exp.response_len, temperature=self.cfg.rollout.temperature).logprobs
        return lp.cpu(), time.perf_counter() - t0

    def pid(self) -> int:
        return pid(self)
