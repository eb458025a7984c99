import math

import pytest
import torch

from xrlhf.algorithms.kl import KL_ESTIMATORS, kl_penalty

LOGP = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-1.5, -1.0, -0.5]])
# log_ratio = logp - ref = [0.5, -1.0, 0.0]


def test_k1():
    assert torch.allclose(kl_penalty(LOGP, REF, "k1"), torch.tensor([[0.5, -1.0, 0.0]]))


def test_k2():
    # ½·0.5² = 0.125, ½·(-1)² = 0.5, 0
    assert torch.allclose(kl_penalty(LOGP, REF, "k2"), torch.tensor([[0.125, 0.5, 0.0]]))


def test_abs():
    assert torch.allclose(kl_penalty(LOGP, REF, "abs"), torch.tensor([[0.5, 1.0, 0.0]]))


def test_k3():
    # exp(ref - logp) - (ref - logp) - 1 with ref - logp = [-0.5, 1.0, 0.0]
    expected = torch.tensor([[math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1, 0.0]])
    assert torch.allclose(kl_penalty(LOGP, REF, "k3"), expected)
    assert (kl_penalty(LOGP, REF, "k3") >= 0).all()


def test_unknown_estimator_names_the_allowed_ones():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_penalty(LOGP, REF, "k4")
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3", "abs"}
