"""docs/study/analysis.py, the pre-registered analysis, on the first run's committed files: its numbers are the ones
a direct computation from eval.jsonl and metrics.jsonl gives, and Holm runs over the family the plan names."""
import importlib.util
import json
import math
import sys
from pathlib import Path
from statistics import mean

import pytest

from xrlhf.stats import holm, linear_trend, t_p_value

ROOT = Path(__file__).resolve().parents[1]
FIRST = ROOT / "docs" / "study"  # the first run: three arms, three seeds, 24 evaluation prompts


@pytest.fixture(scope="module")
def analysis():
    spec = importlib.util.spec_from_file_location("study_analysis", ROOT / "docs" / "study" / "analysis.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.analyse(FIRST)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_primary_gain_is_tuned_minus_base_per_prompt_averaged_per_seed(analysis):
    evals = rows(FIRST / "eval" / "eval.jsonl")
    base = {r["prompt_id"]: r["reward"] for r in evals if r["model"] == "base"}
    assert analysis["eval_prompts"] == len(base) == 24
    for arm in ("ppo", "reinforce_ema", "rloo"):
        seeds = [mean(r["reward"] - base[r["prompt_id"]] for r in evals if r["model"] == f"{arm}-seed{s}")
                 for s in (0, 1, 2)]
        got = analysis["arms"][arm]["primary"]
        assert got["per_seed"] == pytest.approx(seeds) and got["p"] == pytest.approx(t_p_value(seeds))
        assert got["lo"] < got["mean"] < got["hi"]
    p = [analysis["arms"][a]["primary"]["p"] for a in ("ppo", "reinforce_ema", "rloo")]
    assert [analysis["arms"][a]["primary"]["p_holm"] for a in ("ppo", "reinforce_ema", "rloo")] == holm(p)
    # nothing in the first run passes the pre-registered test (docs/STUDY.md)
    assert not any(analysis["arms"][a]["primary"]["beyond_noise"] for a in ("ppo", "reinforce_ema", "rloo"))


def test_trend_kl_and_dimension_family(analysis):
    m = rows(FIRST / "rloo-seed1" / "metrics.jsonl")
    slope, sd = linear_trend([r["reward/mean"] for r in m])
    got = analysis["arms"]["rloo"]
    assert got["reward_slope"]["per_seed"][1] == pytest.approx(slope)
    assert got["stability_residual_sd"]["per_seed"][1] == pytest.approx(sd)
    assert got["kl_last_quarter"]["per_seed"][1] == pytest.approx(mean(r["kl/mean"] for r in m[-3:]))  # 12 steps
    # Holm over every dimension x arm: 15 tests
    cells = [(a, d) for a in analysis["arms"] for d in analysis["arms"][a]["dimensions"]]
    assert len(cells) == 15
    adjusted = holm([analysis["arms"][a]["dimensions"][d]["p"] for a, d in cells])
    assert [analysis["arms"][a]["dimensions"][d]["p_holm"] for a, d in cells] == adjusted


def test_hacking_quoting_counts_five_word_quotes_against_base(analysis):
    from xrlhf.report.study import quoted_words

    evals = rows(FIRST / "eval" / "eval.jsonl")
    q = {(r["model"], r["prompt_id"]): quoted_words(r["response"], r["prompt"]) >= 5 for r in evals}
    base = mean(float(v) for (m, _), v in q.items() if m == "base")
    ema0 = mean(float(v) for (m, _), v in q.items() if m == "reinforce_ema-seed0")
    assert analysis["arms"]["reinforce_ema"]["hacking"]["quoting"]["per_seed"][0] == pytest.approx(ema0 - base)
    assert math.isfinite(analysis["arms"]["rloo"]["hacking"]["distinct2"]["mean"])
