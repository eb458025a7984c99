import math

import pytest
import torch

from xrlhf.algorithms.ppo import compute_gae, explained_variance, policy_loss, token_level_rewards, value_loss


def test_token_level_rewards_score_on_last_real_token():
    scores = torch.tensor([1.0, -2.0])
    kl = torch.tensor([[0.2, 0.4, 7.0], [0.1, 0.0, -0.3]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # -0.5·kl on real tokens; the score added at index 1 (row 0) and index 2 (row 1)
    expected = torch.tensor([[-0.1, -0.2 + 1.0, 0.0], [-0.05, 0.0, 0.15 - 2.0]])
    assert torch.allclose(token_level_rewards(scores, kl, mask, kl_coef=0.5), expected)


def test_gae_hand_worked_with_cut_last_token():
    rewards = torch.tensor([[0.1, 1.0, 5.0], [0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 9.0], [0.3, 0.6, 0.4]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0 ends at t=1, nothing after it: δ1 = 1.0 + 0.9·0 - 0.2 = 0.8, A1 = 0.8
    # δ0 = 0.1 + 0.9·0.2 - 0.5 = -0.22, A0 = -0.22 + 0.72·0.8 = 0.356
    # row 1: δ2 = 1.0 - 0.4 = 0.6; δ1 = 0 + 0.9·0.4 - 0.6 = -0.24; δ0 = 0 + 0.9·0.6 - 0.3 = 0.24
    # A2 = 0.6, A1 = -0.24 + 0.72·0.6 = 0.192, A0 = 0.24 + 0.72·0.192 = 0.37824
    expected_adv = torch.tensor([[0.356, 0.8, 0.0], [0.37824, 0.192, 0.6]])
    assert torch.allclose(advantages, expected_adv, atol=1e-6)
    # returns = A + V, 0 on padding
    expected_ret = torch.tensor([[0.856, 1.0, 0.0], [0.67824, 0.792, 1.0]])
    assert torch.allclose(returns, expected_ret, atol=1e-6)


RATIOS = [0.7, 0.8, 1.0, 1.2, 1.5]  # beyond, at lower edge, inside, at upper edge, beyond (ε = 0.2)


@pytest.mark.parametrize(
    "advantage, expected",
    [
        # A > 0: -A·min(r, clip(r)) → the upside is capped at 1.2, the downside is not
        (1.0, [-0.7, -0.8, -1.0, -1.2, -1.2]),
        # A < 0: -A·max(r, clip(r)) → the downside is capped at 0.8, the upside is not
        (-1.0, [0.8, 0.8, 1.0, 1.2, 1.5]),
    ],
)
def test_policy_loss_clip_edges(advantage, expected):
    for ratio, loss_at_ratio in zip(RATIOS, expected):
        logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)
        loss, _ = policy_loss(logprobs, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), 0.2)
        assert loss.item() == pytest.approx(loss_at_ratio, abs=1e-6)
    # the gradient vanishes exactly where the clipped term wins: r = 1.5 for A > 0, r = 0.7 for A < 0
    clipped_ratio, free_ratio = (1.5, 0.7) if advantage > 0 else (0.7, 1.5)
    for ratio, zero_grad in [(clipped_ratio, True), (free_ratio, False)]:
        logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)
        loss, _ = policy_loss(logprobs, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), 0.2)
        (grad,) = torch.autograd.grad(loss, logprobs)
        # d(-A·r)/d log π = -A·r
        assert grad.item() == pytest.approx(0.0 if zero_grad else -advantage * ratio)


def test_policy_loss_masks_and_stats():
    ratios = torch.tensor([[0.7, 1.0, 1.5, 3.0]])  # the last token is padding
    mask = torch.tensor([[1, 1, 1, 0]])
    advantages = torch.tensor([[1.0, 2.0, 1.0, 100.0]])
    loss, stats = policy_loss(ratios.log(), torch.zeros(1, 4), advantages, mask, 0.2)
    # (-0.7 - 2.0 - 1.2) / 3
    assert loss.item() == pytest.approx(-3.9 / 3)
    # |r - 1| > 0.2 at 0.7 and 1.5
    assert stats["clipfrac"] == pytest.approx(2 / 3)
    # (r - 1) - log r: (-0.3 - log 0.7) + 0 + (0.5 - log 1.5), over 3
    assert stats["approx_kl"] == pytest.approx((-0.3 - math.log(0.7) + 0.5 - math.log(1.5)) / 3)


def test_value_loss_clipped_and_unclipped():
    values = torch.tensor([[1.0, 0.5, 2.0, 9.0]])
    old_values = torch.tensor([[0.0, 0.4, 1.0, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # unclipped: ½·(1² + 0.5² + 1²) / 3
    loss, stats = value_loss(values, old_values, returns, mask, None)
    assert loss.item() == pytest.approx(0.5 * 2.25 / 3)
    assert stats["vf_clipfrac"] == 0.0
    # ε = 0.2: v_clipped = [0.2, 0.5, 1.2]; (v_clipped - R)² = [0.04, 0.25, 3.24]
    # max with [1, 0.25, 1] → [1, 0.25, 3.24]; ½·4.49 / 3
    loss, stats = value_loss(values, old_values, returns, mask, 0.2)
    assert loss.item() == pytest.approx(0.5 * 4.49 / 3)
    assert stats["vf_clipfrac"] == pytest.approx(1 / 3)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    # predicting the mean 2 leaves residuals [-1, 0, 1], as varied as the returns: 1 - 1 = 0
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0)
    # residuals [0.5, 0, -0.5] have a quarter of the variance: 1 - 1/4
    values = returns - torch.tensor([[0.5, 0.0, -0.5, 0.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.75)
    assert math.isnan(explained_variance(returns, torch.ones_like(returns), mask))
