"""An algorithm added as the registry asks: this file and one registry entry (`register`), nothing else.

Plain policy gradient against a fixed baseline, A = G − b with b a constant: REINFORCE's update with its learned
baseline replaced by the constant, so the file holds only what differs.
"""
from __future__ import annotations

import torch

from xrlhf.config import LEARNERS, Config
from xrlhf.learners.reinforce import ReinforceLearner

NAME = "pg_fixed"
SPEC = f"{__name__}:FixedBaselineLearner"
BASELINE = 0.5


class FixedBaselineLearner(ReinforceLearner):
    """G = judge reward − β·ΣKL;  A = G − b, b fixed;  loss = −A·log π(y|x)."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.baseline = lambda returns, group_ids: torch.full_like(returns, BASELINE)  # [B]


def register() -> None:
    """The registry entry. A Ray worker runs it as it starts (runtime_env's worker_process_setup_hook), so the
    config each actor validates knows the name too."""
    LEARNERS[NAME] = SPEC
