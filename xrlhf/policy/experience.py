"""A batch of sampled experience: the tensors and texts of one step's samples, and their moves.

Layout: `input_ids [B, T]` is the prompt left-padded to P followed by the response right-padded
to R (T = P + R). Response-aligned tensors are `[B, R]`: `logprobs[b, j]` is the log-probability
of response token j given everything before it. The kernels that compute on it are in xrlhf.ops.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from xrlhf.algorithms.kl import kl_penalty


@dataclass
class Experience:
    """Sampled sequences with what the sampler and judges knew about them; one row per sample."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, R]
    behaviour_logprobs: torch.Tensor  # [B, R] from the policy that sampled
    prompts: list[str]
    responses: list[str]
    group_ids: list[int]  # which prompt each sample came from
    policy_version: int  # weights version that sampled this batch
    ref_logprobs: torch.Tensor | None = None  # [B, R]
    scores: list[dict[str, float | None]] | None = None  # per-judge scores, None where a judge failed
    rewards: torch.Tensor | None = None  # [B] aggregate judge reward, NaN where the judge dropped the sample
    kl: torch.Tensor | None = None  # [B, R] per-token KL to the reference (0 at padding), set by set_reference

    def set_reference(self, ref_logprobs: torch.Tensor, estimator: str) -> None:
        """Attach the reference log-probs and the per-token KL of the sampled tokens to them, computed here once
        for the learner, the metrics and the sample rows."""
        self.ref_logprobs = ref_logprobs
        self.kl = kl_penalty(self.behaviour_logprobs.float(), ref_logprobs, estimator) * self.response_mask.float()

    def token_kl(self) -> torch.Tensor:
        """The per-token KL `[B, R]`; a clear error where no reference was attached."""
        if self.kl is None:
            raise ValueError("this batch has no reference log-probs: call Experience.set_reference first")
        return self.kl

    @property
    def response_len(self) -> int:
        """R, the padded response length."""
        return self.response_mask.shape[1]

    def lengths(self) -> list[int]:
        """Tokens in each response."""
        return [int(n) for n in self.response_mask.sum(-1)]

    def to(self, device: torch.device | str) -> Experience:
        """A copy with every tensor on `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def select(self, indices: list[int]) -> Experience:
        """The rows at `indices`, in that order (e.g. to drop samples a judge rejected)."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[torch.as_tensor(indices, dtype=torch.long, device=value.device)]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in indices]
        return replace(self, **picked)
