import pytest
import torch

from xrlhf.algorithms.reinforce import (
    BASELINES,
    EmaBaseline,
    baseline_batch_mean,
    baseline_loo,
    make_baseline,
    reinforce_loss,
    sequence_returns,
)


def test_sequence_returns_sums_kl_over_real_tokens():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 9.0], [0.5, -0.1, 0.4]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # 1 - 0.5·(0.1 + 0.2) = 0.85; 2 - 0.5·(0.5 - 0.1 + 0.4) = 1.6
    assert torch.allclose(sequence_returns(scores, kl, mask, kl_coef=0.5), torch.tensor([0.85, 1.6]))


def test_baseline_batch_mean():
    returns = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(baseline_batch_mean(returns, [0, 0, 1]), torch.tensor([3.0, 3.0, 3.0]))


def test_baseline_loo_groups_of_two_and_three():
    returns = torch.tensor([1.0, 4.0, 2.0, 10.0, 3.0])
    group_ids = [7, 3, 7, 3, 7]  # group 7: 1, 2, 3; group 3: 4, 10
    # group 7: (2 + 3)/2, (1 + 3)/2, (1 + 2)/2; group 3: the other one
    expected = torch.tensor([2.5, 10.0, 2.0, 4.0, 1.5])
    assert torch.allclose(baseline_loo(returns, group_ids), expected)


def test_baseline_loo_lone_sample_gets_the_rest_of_the_batch():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0])
    # prompt 0: the other one; prompts 1 and 2 kept one sample each: the mean of the three others,
    # (1 + 2 + 6) / 3 and (1 + 2 + 3) / 3
    assert torch.allclose(baseline_loo(returns, [0, 0, 1, 2]), torch.tensor([2.0, 1.0, 3.0, 2.0]))
    assert torch.equal(baseline_loo(torch.tensor([5.0]), [4]), torch.tensor([0.0]))  # the batch's only sample


def test_ema_baseline_over_two_calls():
    ema = EmaBaseline(decay=0.9)
    # first call: initialised with the batch mean 2, which stays 2 after folding the same batch in
    assert torch.allclose(ema(torch.tensor([1.0, 3.0])), torch.tensor([2.0, 2.0]))
    assert ema.value == pytest.approx(2.0)
    # second call uses the old value, then 0.9·2 + 0.1·6 = 2.4
    assert torch.allclose(ema(torch.tensor([4.0, 8.0]), [0, 1]), torch.tensor([2.0, 2.0]))
    assert ema.value == pytest.approx(2.4)
    restored = EmaBaseline(decay=0.9)
    restored.load_state_dict(ema.state_dict())
    restored.update(torch.tensor([0.4]))
    # 0.9·2.4 + 0.1·0.4 = 2.2
    assert restored.value == pytest.approx(2.2)


def test_make_baseline():
    assert make_baseline("loo") is baseline_loo
    ema = make_baseline("ema", decay=0.5)
    assert isinstance(ema, EmaBaseline) and ema.decay == 0.5
    assert set(BASELINES) == {"batch_mean", "loo", "ema"}
    with pytest.raises(ValueError, match="batch_mean"):
        make_baseline("critic")


def test_reinforce_loss_sequence_sum_and_token_mean():
    logprobs = torch.tensor([[-1.0, -2.0, -5.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = torch.tensor([2.0, -1.0])
    # sequence logprobs -3, -1.5: -(2·(-3) + (-1)·(-1.5)) / 2 = 2.25
    loss = reinforce_loss(logprobs, advantages, mask)
    assert loss.item() == pytest.approx(2.25)
    (grad,) = torch.autograd.grad(loss, logprobs)
    # dL/dlogp = -A_b / B on real tokens
    assert torch.allclose(grad, torch.tensor([[-1.0, -1.0, 0.0], [0.5, 0.5, 0.5]]))
    # token mean: -(2·(-1) + 2·(-2) + (-1)·(-0.5)·3) / 5 = 4.5 / 5
    assert reinforce_loss(logprobs, advantages, mask, token_mean=True).item() == pytest.approx(0.9)


def test_ema_baseline_started_at_zero_as_the_study():
    """The study's MovingAverageBaseline: the first batch sees 0, its update sets the average to that batch's
    mean (the study's `initialized` flag), later updates are 0.99 * b + 0.01 * mean."""
    ema = make_baseline("ema", decay=0.99, init=0.0)
    assert torch.equal(ema(torch.tensor([1.0, 3.0])), torch.zeros(2))
    assert ema.value == pytest.approx(2.0)
    assert torch.allclose(ema(torch.tensor([4.0, 8.0])), torch.full((2,), 2.0))
    # 0.99 * 2 + 0.01 * 6 = 2.04
    assert ema.value == pytest.approx(2.04)
    restored = make_baseline("ema", decay=0.99, init=0.0)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 2 and torch.allclose(restored(torch.tensor([0.0])), torch.tensor([2.04]))
    # 0.99 * 2.04 + 0.01 * 0 = 2.0196
    assert restored.value == pytest.approx(2.0196)


def test_ema_checkpoint_without_update_count_counts_as_started():
    old = EmaBaseline(decay=0.5)
    old.load_state_dict({"value": 4.0})
    old.update(torch.tensor([2.0]))
    # an average that already held a value folds the batch in: 0.5 * 4 + 0.5 * 2
    assert old.value == pytest.approx(3.0)


def test_importance_weights_scale_each_tokens_gradient():
    """Off-policy tokens: the loss's gradient per token is -A_b * w_bt / B, so a weight of 0 removes a token and the
    on-policy loss is the weighted one with all weights 1."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    advantages, mask = torch.tensor([2.0, -1.0]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    weights = torch.tensor([[1.0, 0.5, 0.0], [0.25, 1.0, 1.0]])
    reinforce_loss(logprobs, advantages, mask, weights=weights).backward()
    expected = -(advantages.unsqueeze(-1) * weights * mask) / 2
    assert torch.allclose(logprobs.grad, expected)
    plain = reinforce_loss(logprobs.detach(), advantages, mask)
    assert torch.allclose(reinforce_loss(logprobs.detach(), advantages, mask, weights=torch.ones(2, 3)), plain)
