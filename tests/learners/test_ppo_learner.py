"""PPOLearner (xrlhf/learners/ppo.py) on the tiny model."""
from pathlib import Path

import pytest
import torch

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@pytest.mark.parametrize("epochs,minibatch,forwards", [(1, 8, (1, 2)), (1, 4, (3, 4)), (2, 4, (5, 6))])
def test_update_reuses_the_first_minibatch_forward_for_its_old_values(epochs, minibatch, forwards):
    """The first minibatch's update forward doubles as its rows' old-values pass: one policy forward fewer
    per update (with one minibatch, the no-grad pass is gone), and the same update."""
    from xrlhf.config import load_config
    from xrlhf.learners import make_learner
    from xrlhf.policy.generation import sample
    from xrlhf.policy.models import trainable_state

    cfg = load_config(TINY, ["algorithm.name=ppo", f"algorithm.ppo.epochs={epochs}",
                             f"algorithm.ppo.minibatch_size={minibatch}"])
    fused, plain = make_learner(cfg), make_learner(cfg)
    plain.reuse_update_forward = False
    # a critic that already predicts different values per row (it starts at zero), so old values placed in
    # the wrong rows would change the advantages and the update
    with torch.no_grad():
        torch.manual_seed(1)
        fused.value_head.linear.weight.normal_(0.0, 0.5)
        fused.value_head.linear.bias.fill_(0.2)
    plain.value_head.load_state_dict(fused.value_head.state_dict())
    start = {k: v.clone() for k, v in fused.value_head.state_dict().items()}
    exp = sample(fused.trainer.model, fused.trainer.tokenizer, ["Say something.", "Name a fruit."], 4, 12, seed=0)
    exp.set_reference(exp.behaviour_logprobs - 0.01, fused.cfg.algorithm.kl_estimator)
    exp.rewards = torch.linspace(0.0, 1.0, 8)
    for learner in (fused, plain):
        calls = []
        forward = learner.trainer.forward
        learner.trainer.forward = lambda *a, _f=forward, **k: calls.append(1) or _f(*a, **k)
        learner.metrics, _ = learner.update(exp)
        learner.forwards = len(calls)
    assert (fused.forwards, plain.forwards) == forwards
    for key in ("loss/policy", "loss/value", "ppo/explained_variance", "grad_norm"):
        assert fused.metrics[key] == pytest.approx(plain.metrics[key], rel=1e-4, abs=1e-6), key
    a, b = trainable_state(fused.trainer.model), trainable_state(plain.trainer.model)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    heads = fused.value_head.state_dict(), plain.value_head.state_dict()
    assert all(torch.allclose(heads[0][k], heads[1][k], atol=1e-6) for k in heads[0])
    assert not torch.equal(heads[0]["linear.weight"], start["linear.weight"])  # the critic did learn
