"""ReinforceLearner (xrlhf/learners/reinforce.py) on the tiny model."""
from pathlib import Path

import pytest
import torch

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@pytest.mark.parametrize("init,first_baseline", [("zero", 0.0), ("first_batch", None)])
def test_reinforce_learner_ema_baseline_per_optimiser_step(init, first_baseline):
    """Through the real learner on the tiny model: two updates, the baseline each saw, by hand from the returns."""
    from xrlhf.algorithms.kl import kl_penalty
    from xrlhf.algorithms.reinforce import sequence_returns
    from xrlhf.config import load_config
    from xrlhf.learners import make_learner
    from xrlhf.policy.generation import sample

    cfg = load_config(TINY, ["algorithm.reinforce.baseline=ema", "algorithm.reinforce.ema_decay=0.99",
                             f"algorithm.reinforce.ema_init={init}", "algorithm.kl_coef=0.5"])
    learner = make_learner(cfg)
    seen, all_returns = [], []
    for step, rewards in enumerate((torch.tensor([0.2, 0.4, 0.6, 1.0]), torch.tensor([1.0, 0.0, 0.5, 0.5]))):
        exp = sample(learner.trainer.model, learner.trainer.tokenizer, ["Say something.", "Name a fruit."], 2, 8,
                     seed=step)
        exp.set_reference(exp.behaviour_logprobs - 0.02, "k1")
        exp.rewards = rewards
        mask = exp.response_mask.float()
        returns = sequence_returns(rewards, kl_penalty(exp.behaviour_logprobs, exp.ref_logprobs, "k1") * mask,
                                   mask, 0.5)
        metrics, advantages = learner.update(exp)
        seen.append(metrics["reinforce/baseline"])
        all_returns.append(returns)
        assert torch.allclose(torch.tensor(advantages), returns - seen[-1], atol=1e-5)
    first_mean = float(all_returns[0].mean())
    assert seen[0] == pytest.approx(first_mean if first_baseline is None else first_baseline, abs=1e-6)
    assert seen[1] == pytest.approx(first_mean, abs=1e-6)  # the first optimiser step set it to its batch's mean
    assert learner.baseline.value == pytest.approx(0.99 * first_mean + 0.01 * float(all_returns[1].mean()), abs=1e-6)
    assert learner.state()["baseline"]["updates"] == 2


def test_reinforce_learner_loo_baseline_with_a_lone_sample():
    """A judge dropped one of a prompt's two samples: the learner's advantages are the returns minus baseline_loo,
    whose rule gives the lone sample the mean return of the rest of the batch."""
    from xrlhf.config import load_config
    from xrlhf.learners import make_learner
    from xrlhf.policy.generation import sample

    learner = make_learner(load_config(TINY, ["algorithm.reinforce.baseline=loo", "algorithm.kl_coef=0.0"]))
    exp = sample(learner.trainer.model, learner.trainer.tokenizer, ["Say something.", "Name a fruit."], 2, 8, seed=0)
    exp = exp.select([0, 1, 2])  # prompt 1 kept one sample
    exp.set_reference(exp.behaviour_logprobs, "k1")
    exp.rewards = torch.tensor([0.2, 0.6, 1.0])
    metrics, advantages = learner.update(exp)
    # returns = rewards (kl_coef 0); baselines 0.6, 0.2 (the other sample of prompt 0), (0.2 + 0.6) / 2
    assert advantages == pytest.approx([-0.4, 0.4, 0.6], abs=1e-6)
    assert metrics["reinforce/baseline"] == pytest.approx((0.6 + 0.2 + 0.4) / 3, abs=1e-6)
