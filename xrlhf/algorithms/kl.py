"""Per-token estimators of KL(π || π_ref) from the log-probabilities of sampled tokens.

With log_ratio = log π(y) - log π_ref(y) and y ~ π (Schulman, "Approximating KL divergence"):
k1 is unbiased but noisy and can be negative, k2 is low-variance but biased, k3 is unbiased
and always ≥ 0, abs is the magnitude of k1.
"""

from __future__ import annotations

from typing import Callable

import torch


def kl_k1(log_ratio: torch.Tensor) -> torch.Tensor:
    # k1 = log π - log π_ref
    return log_ratio


def kl_k2(log_ratio: torch.Tensor) -> torch.Tensor:
    # k2 = ½ (log π - log π_ref)²
    return 0.5 * log_ratio**2


def kl_abs(log_ratio: torch.Tensor) -> torch.Tensor:
    # abs = |log π - log π_ref|
    return log_ratio.abs()


def kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    # k3 = exp(log π_ref - log π) - (log π_ref - log π) - 1
    return torch.exp(-log_ratio) + log_ratio - 1


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "abs": kl_abs,
    "k3": kl_k3,
}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate `[B, R]` by the named estimator; padded positions are not masked."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logprobs - ref_logprobs)
