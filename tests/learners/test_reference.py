"""The colocated reference is the base weights after updates and after a resume, with LoRA and without."""
from pathlib import Path

import pytest
import torch

from xrlhf.config import load_config
from xrlhf.learners import make_learner
from xrlhf.ops import response_logprobs
from xrlhf.policy.generation import sample
from xrlhf.policy.models import load_causal_lm

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
LORA = {"full": ["model.lora.enabled=false"],
        "lora": ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"]}


def _batch(learner):
    tr = learner.trainer
    exp = sample(tr.model, tr.tokenizer, ["Say something.", "Name a fruit."], 4, 10, seed=0)
    exp.set_reference(exp.behaviour_logprobs - 0.01, learner.cfg.algorithm.kl_estimator)
    exp.rewards = torch.linspace(0.0, 1.0, 8)
    return exp


def _base_logprobs(exp):
    base, _ = load_causal_lm("tiny")
    with torch.no_grad():
        return response_logprobs(base, exp.input_ids, exp.attention_mask, exp.response_len).logprobs  # [B, R]


def _policy_logprobs(learner, exp):
    with torch.no_grad():
        return learner.trainer.forward(exp).logprobs.cpu()  # [B, R]


def _trained(lora: str):
    cfg = load_config(TINY, ["algorithm.name=reinforce", "algorithm.lr=0.05", *LORA[lora]])
    learner = make_learner(cfg)
    exp = _batch(learner)
    for _ in range(2):
        learner.update(exp)
    assert learner.version == 2
    return cfg, learner, exp


@pytest.mark.parametrize("lora", sorted(LORA))
def test_colocated_reference_is_the_base_not_the_updated_policy(lora):
    _, learner, exp = _trained(lora)
    mask = exp.response_mask.bool()
    ref, policy, base = learner.reference_logprobs(exp), _policy_logprobs(learner, exp), _base_logprobs(exp)
    assert (ref - policy)[mask].abs().max() > 1e-2  # the updates moved the policy away from the reference
    torch.testing.assert_close(ref[mask], base[mask], atol=1e-4, rtol=0)


@pytest.mark.parametrize("lora", sorted(LORA))
def test_a_resumed_learner_keeps_the_base_as_reference(lora):
    cfg, learner, exp = _trained(lora)
    fresh = make_learner(cfg)
    fresh.load_state(learner.state())
    mask = exp.response_mask.bool()
    ref, policy = fresh.reference_logprobs(exp), _policy_logprobs(fresh, exp)
    torch.testing.assert_close(policy, _policy_logprobs(learner, exp))  # the resumed policy, not the base
    assert (ref - policy)[mask].abs().max() > 1e-2
    torch.testing.assert_close(ref[mask], _base_logprobs(exp)[mask], atol=1e-4, rtol=0)


def test_the_full_fine_tuning_reference_is_frozen_and_outside_the_state():
    _, learner, _ = _trained("full")
    ref = learner.trainer.reference
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    trained = {id(p) for g in learner.trainer.optimizer.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in ref.parameters()}
    assert not {p.data_ptr() for p in learner.trainer.model.parameters()} & {p.data_ptr() for p in ref.parameters()}
