"""Learners: the only algorithm-specific code. Each has update(exp), state(), load_state() and a `trainer`."""
from __future__ import annotations

from typing import Any

from xrlhf.config import Config

LEARNERS = {"ppo": "xrlhf.learners.ppo:PPOLearner", "reinforce": "xrlhf.learners.reinforce:ReinforceLearner"}


def make_learner(cfg: Config) -> Any:
    """The learner class that config names; the one place an algorithm name maps to code."""
    import importlib

    module, cls = LEARNERS[cfg.algorithm.name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
