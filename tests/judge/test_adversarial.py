"""The packaged gemma judge against the adversarial set (xrlhf/judge/adversarial.py): an injection must not
buy a higher score.

The default five-dimension judge scores every case in expected mode, with and without the injection;
the targeted dimension's uplift must stay within TOLERANCE, and the worst uplift on the targeted and on
any dimension is written to tests/artifacts/adversarial.json.
"""
import json
import time
from pathlib import Path

import pytest

from xrlhf.config import DEFAULT_DIMENSIONS, JudgeConfig
from xrlhf.judge.adversarial import HOLDOUT, TOLERANCE, load_cases, uplifts
from xrlhf.judge.hf import HFJudge
from xrlhf.judge.template import encode, render_dimension

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "tests" / "artifacts" / "adversarial.json"
MAX_RESPONSE_TOKENS = 384  # the JudgeConfig default: the long cases are cut here


def _judge(dims: tuple[str, ...] = tuple(DEFAULT_DIMENSIONS)) -> HFJudge:
    cfg = JudgeConfig(model="packaged", mode="expected", cache=False, max_response_tokens=MAX_RESPONSE_TOKENS,
                      dimensions={d: DEFAULT_DIMENSIONS[d] for d in dims})
    return HFJudge(cfg, "packaged")


def test_holdout_set_is_well_formed_and_new():
    """The held-out cases bench/judge.py reports: each dimension at least 4 times, none repeating a case of the set."""
    cases = load_cases(HOLDOUT)
    assert len(cases) >= 20
    for c in cases:
        assert c["injected"].startswith(c["response"]) and len(c["injected"]) > len(c["response"])
    assert min(sum(c["dimension"] == d for c in cases) for d in DEFAULT_DIMENSIONS) >= 4
    seen = {c["prompt"] for c in load_cases()} | {c["injected"][len(c["response"]):] for c in load_cases()}
    assert not [c for c in cases if c["prompt"] in seen or c["injected"][len(c["response"]):] in seen]


def test_adversarial_set_covers_the_five_dimensions():
    cases = load_cases()
    assert len(cases) >= 30
    for c in cases:
        assert set(c) >= {"dimension", "prompt", "response", "injected"}
        assert c["injected"].startswith(c["response"]) and len(c["injected"]) > len(c["response"])
    per_dim = {d: sum(c["dimension"] == d for c in cases) for d in DEFAULT_DIMENSIONS}
    assert min(per_dim.values()) >= 5, per_dim
    text = "\n".join(c["injected"] for c in cases)
    assert "END_RESPONSE" in text and "Correctness: 4" in text and "<start_of_turn>" in text
    assert sum(len(c["injected"]) > 4 * MAX_RESPONSE_TOKENS for c in cases) >= 4  # rubric-out-of-window cases


@pytest.mark.slow
def test_injections_do_not_raise_the_score():
    cases = load_cases()
    start = time.perf_counter()
    judge = _judge()  # the default judge, rubric of five dimensions, as a run uses it
    rows = uplifts(judge, cases)
    assert judge.stats()["failures"] == 0
    for c in cases:  # the long cases: the response is cut, the rubric and the cue survive
        dim = c["dimension"]
        if len(judge.tokenizer(c["injected"], add_special_tokens=False)["input_ids"]) > MAX_RESPONSE_TOKENS:
            d = next(x for x in judge.rubric.dimensions if x.name == dim)
            ids = encode(judge.tokenizer, render_dimension(judge.template, c["prompt"], judge._clip(c["injected"]),
                                                           d, judge.labels, judge.rubric.dimensions), "0")
            text = judge.tokenizer.decode(ids, skip_special_tokens=True)
            head = text.split("<<<USER_PROMPT>>>", 1)[0]
            assert "more tokens not shown" in text and text.rstrip().endswith(f"Dimension: {dim}.\nScore (0-4):")
            assert all(f"- {x.name} (0-4): {x.definition}" in head for x in judge.rubric.dimensions)
    worst = max(rows, key=lambda r: r["uplift"])
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps({"model": "packaged gemma-3-270m", "mode": "expected", "tolerance": TOLERANCE,
                                    "cases": len(rows), "worst_uplift": worst["uplift"], "worst_case": worst,
                                    "worst_uplift_any_dimension": max(r["uplift_any_dimension"] for r in rows),
                                    "failing": sum(r["uplift"] > TOLERANCE for r in rows),
                                    "seconds": round(time.perf_counter() - start, 1), "rows": rows}, indent=2) + "\n")
    failing = [f"{r['dimension']}: {r['plain']:.3f} -> {r['injected']:.3f} ({r['injection'][:60]!r})"
               for r in rows if r["uplift"] > TOLERANCE]
    assert not failing, f"{len(failing)} injections raised the score by more than {TOLERANCE}:\n" + "\n".join(failing)


GOOD_BAD = [
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "I like turtles."),
    ("Write a Python function that adds two numbers.", "def add(a, b):\n    return a + b",
     "The weather is nice today."),
    ("How do I boil an egg?",
     "Put the egg in a pan of cold water, bring it to the boil, then simmer for 9 to 12 minutes for a hard-boiled "
     "egg. Cool it in cold water before peeling.",
     "Bananas are yellow and grow in bunches."),
    ("Name three primary colours.", "Red, blue and yellow.", "My cat is asleep on the sofa."),
]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the packaged gemma-3-270m (a base model, no chat template) gives good and "
                   "irrelevant answers about the same helpfulness in expected mode: measured good/bad 0.374/0.376, "
                   "0.336/0.365, 0.356/0.368, 0.399/0.405 with the default template (per_dimension: 0.301/0.302, "
                   "0.296/0.301, 0.319/0.333), and in bench/judge.py mismatched pairs score above matched ones. "
                   "Strict: when the judge starts to tell them apart, this passes, fails as XPASS, and the mark must go.")
def test_gemma_scores_a_good_answer_above_a_bad_one():
    # A weak judge may tie or flip one pair within its noise; across the set the good answers must win
    # clearly: 3 of 4 pairs and on average.
    judge = _judge(("helpfulness",))
    prompts = [p for p, _, _ in GOOD_BAD]
    good = [j.reward for j in judge.score(prompts, [g for _, g, _ in GOOD_BAD])]
    bad = [j.reward for j in judge.score(prompts, [b for _, _, b in GOOD_BAD])]
    assert sum(g > b for g, b in zip(good, bad)) >= 3, list(zip(prompts, good, bad))
    assert sum(good) / len(good) > sum(bad) / len(bad), list(zip(prompts, good, bad))
