"""Both learners through the Learner protocol only, with one rule for versions and skipped updates."""
import importlib
import re
from pathlib import Path

import pytest
import torch

from xrlhf.config import load_config
from xrlhf.learners import LEARNERS, Learner, make_learner
from xrlhf.policy.generation import sample
from xrlhf.policy.models import trainable_state

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
# PPO with two epochs of two minibatches: four optimiser steps in one update
ARMS = {"ppo": ["algorithm.name=ppo", "algorithm.ppo.epochs=2", "algorithm.ppo.minibatch_size=4"],
        "reinforce": ["algorithm.name=reinforce"]}


def test_every_registered_algorithm_names_a_learner_class():
    for name, spec in LEARNERS.items():
        module, cls = spec.split(":")
        learner = getattr(importlib.import_module(module), cls)
        assert all(callable(getattr(learner, m, None)) for m in ("update", "weights", "state", "save_adapter")), name


def _batch(learner, rewards):
    tr = learner.trainer
    exp = sample(tr.model, tr.tokenizer, ["Say something.", "Name a fruit."], 4, 10, seed=0)
    exp.set_reference(exp.behaviour_logprobs - 0.01, learner.cfg.algorithm.kl_estimator)
    exp.rewards = rewards
    return exp


@pytest.mark.parametrize("name", sorted(ARMS))
def test_version_advances_only_when_an_update_changed_the_policy(name):
    assert set(ARMS) == set(LEARNERS)  # a new algorithm joins this test
    learner = make_learner(load_config(TINY, ARMS[name]))
    assert isinstance(learner, Learner)
    before = {k: v.clone() for k, v in learner.weights()[0].items()}
    nan = torch.linspace(0.0, 1.0, 8)
    nan[2] = float("nan")  # a NaN reward: every optimiser step of the update is refused
    metrics, advantages = learner.update(_batch(learner, nan))
    assert metrics["skipped_update"] is True and learner.version == 0 and learner.weights()[1] == 0
    assert all(torch.equal(before[k], v) for k, v in learner.weights()[0].items())
    assert len(advantages) == 8

    metrics, advantages = learner.update(_batch(learner, torch.linspace(0.0, 1.0, 8)))
    assert metrics["skipped_update"] is False and learner.version == 1
    after, version = learner.weights()
    assert version == 1 and any(not torch.equal(before[k], v) for k, v in after.items())
    assert len(advantages) == 8 and all(torch.isfinite(torch.tensor(advantages)))

    state = learner.state()
    fresh = make_learner(load_config(TINY, ARMS[name]))
    fresh.load_state(state)
    assert fresh.version == 1
    assert all(torch.equal(after[k], v) for k, v in trainable_state(fresh.trainer.model).items())


def test_a_batch_without_reference_is_a_clear_error():
    learner = make_learner(load_config(TINY, ARMS["reinforce"]))
    tr = learner.trainer
    exp = sample(tr.model, tr.tokenizer, ["Say something."], 2, 6, seed=0)
    exp.rewards = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="set_reference"):
        learner.update(exp)


def test_the_learner_actor_uses_the_protocol_only():
    text = (ROOT / "xrlhf" / "actors" / "learner.py").read_text()
    assert "self.learner." in text
    assert not re.search(r"\.trainer\b", text)
