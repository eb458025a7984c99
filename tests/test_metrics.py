"""The rows a step writes (xrlhf/driver/metrics.py), from a hand-built step whose every number is known."""
from pathlib import Path

import pytest
import torch

from xrlhf.config import load_config
from xrlhf.driver.metrics import attribution, metrics_row, sample_rows
from xrlhf.driver.step import Judged, StepOutcome, UpdateResult
from xrlhf.judge.base import Judgement
from xrlhf.judge.rubric import Dimension, Rubric
from xrlhf.policy.experience import Experience

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _judgement(h, c, reward, missing=0):
    return Judgement({"helpfulness": h, "correctness": c}, {"helpfulness": h, "correctness": c},
                     {"helpfulness": 0.5, "correctness": None}, reward=reward, missing=missing)


def _outcome(update):
    exp = Experience(input_ids=torch.zeros(3, 5, dtype=torch.long), attention_mask=torch.ones(3, 5),
                     response_mask=torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]]),
                     behaviour_logprobs=torch.tensor([[-1.0, -2.0, -9.0], [-1.0, -1.0, -1.0], [-0.5, -9.0, -9.0]]),
                     prompts=["p", "p", "q"], responses=["a b", "c d e", "f"], group_ids=[0, 0, 1], policy_version=4)
    exp.set_reference(torch.tensor([[-1.5, -2.0, 0.0], [-2.0, -1.0, -3.0], [-0.5, 0.0, 0.0]]), "k1")
    judgements = [_judgement(1.0, 0.5, 0.75), _judgement(0.0, 0.5, 0.25), _judgement(None, None, None, missing=2)]
    times = {"time/step": 2.0}
    advantages = [0.25, -0.25, None] if update else [None, None, None]
    return StepOutcome(exp, Judged(judgements, 1.0, {"failures": 2.0}), update, advantages, times)


def test_kl_reward_and_counts_from_one_place():
    cfg = load_config(TINY)
    metrics = {"loss/policy": 0.1, "skipped_update": False, "async/staleness": 1}
    out = _outcome(UpdateResult(metrics, [0.25, -0.25], 0.5))
    row = metrics_row(cfg, 7, out)
    # k1 KL = behaviour - reference on real tokens: 0.5 + 0 | 1 + 0 + 2 | 0 -> sequence KLs 0.5, 3, 0
    assert row["kl/mean"] == pytest.approx((0.5 + 3.0 + 0.0) / 3)
    assert row["reward/mean"] == pytest.approx(0.5) and row["reward/std"] == pytest.approx(0.25)
    assert row["judge/missing"] == 2 and row["judge/dropped"] == 1 and row["judge/failures"] == 2.0
    assert row["response_length/mean"] == pytest.approx(2.0) and row["tokens_per_s"] == pytest.approx(3.0)
    assert row["step"] == 7 and row["policy_version"] == 4 and row["loss/policy"] == 0.1
    assert row["skipped_update"] is False and row["time/step"] == 2.0
    samples = sample_rows(7, out)
    assert [s["kl"] for s in samples] == pytest.approx([0.5, 3.0, 0.0])
    assert [s["length"] for s in samples] == [2, 3, 1] and [s["advantage"] for s in samples] == [0.25, -0.25, None]
    assert samples[2]["reward"] is None and samples[0]["scores"] == {"helpfulness": 1.0, "correctness": 0.5}
    assert [s["staleness"] for s in samples] == [1, 1, None]  # the dropped sample trained nothing


def test_a_step_without_update_is_marked_skipped():
    out = _outcome(None)
    row = metrics_row(load_config(TINY), 0, out)
    assert row["skipped_update"] is True
    assert all(s["staleness"] is None for s in sample_rows(0, out))
    assert all(v is None for k, v in row.items() if k.startswith("attribution/"))


def _rubric(aggregation, weights=(1.0, 1.0)):
    return Rubric(tuple(Dimension(d, d, weight=w) for d, w in zip(("helpfulness", "correctness"), weights)),
                  aggregation)


def test_attribution_goes_to_the_dimension_that_moved_the_advantage():
    judgements = [_judgement(h, 0.5, (h + 0.5) / 2) for h in (0.0, 0.5, 1.0, 1.0)]
    rewards = [j.reward for j in judgements]
    advantages = [r - sum(rewards) / 4 for r in rewards]
    shares = attribution(judgements, advantages, _rubric("mean"))
    assert shares == pytest.approx({"attribution/helpfulness": 1.0, "attribution/correctness": 0.0})
    # a missing score takes the batch mean: it carries no share
    judgements[1] = _judgement(None, 0.5, 0.5)
    shares = attribution(judgements, advantages, _rubric("mean"))
    assert shares["attribution/correctness"] == pytest.approx(0.0)
    assert attribution(judgements[:1], advantages[:1], _rubric("mean")) == {"attribution/helpfulness": None,
                                                                             "attribution/correctness": None}


def test_attribution_weighs_each_dimension_as_the_rubric_aggregates_it():
    # h = 0, 1 and c = 0.5, 0 against A = -1, 1: cov(A, s_h) = 0.5, cov(A, s_c) = -0.25
    judgements = [_judgement(0.0, 0.5, None), _judgement(1.0, 0.0, None)]
    # weighted 3 : 1, coefficients 3/4 and 1/4: 0.375 and -0.0625 of their sum 0.3125
    shares = attribution(judgements, [-1.0, 1.0], _rubric("weighted", (3.0, 1.0)))
    assert shares == pytest.approx({"attribution/helpfulness": 1.2, "attribution/correctness": -0.2})
    # mean ignores the weights (1/2 each): 0.25 and -0.125 of 0.125; min takes the mean's coefficients
    for aggregation in ("mean", "min"):
        shares = attribution(judgements, [-1.0, 1.0], _rubric(aggregation, (3.0, 1.0)))
        assert shares == pytest.approx({"attribution/helpfulness": 2.0, "attribution/correctness": -1.0})
