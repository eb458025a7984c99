"""The study's analyses in the report (xrlhf/report/study.py, the win-rate section) on a hand-made compare directory."""
import json
import math
from pathlib import Path

import pytest

from report_cells import summary_value
from xrlhf.report import build_report
from xrlhf.report.data import load_compare, pairings, val_curve
from xrlhf.report.study import distinct_ngram_ratio, quoted_words, verdict, versus_base

DIMS = ["helpfulness", "verbosity"]
ARMS = ["ppo", "rloo"]


def val(arm: str, seed: int, samples: int) -> float:
    """ppo climbs 0.01 per 8 samples, rloo 0.02; seeds differ by 0.001."""
    return 0.3 + (0.01 if arm == "ppo" else 0.02) * samples / 8 + 0.001 * seed


def write(root: Path, biased: bool) -> Path:
    root.mkdir(parents=True)
    (root / "compare.json").write_text(json.dumps({
        "algorithms": ARMS, "seeds": [0, 1, 2], "runs": {a: [f"{a}-seed{s}" for s in range(3)] for a in ARMS},
        "dimensions": {d: {"weight": 1.0, "direction": "higher"} for d in DIMS},
        "judges": {"training": "hf packaged, mode likelihood", "evaluation": "http big-judge, mode expected",
                   "evaluation_is_training": False}}))
    eval_rows, pair_rows = [], []
    for pid in range(4):
        eval_rows.append({"model": "base", "algorithm": "base", "seed": None, "prompt_id": pid, "reward": 0.4,
                          "normalised": {"helpfulness": 0.4, "verbosity": 0.5}, "confidence": {"helpfulness": 0.5},
                          "response": "a b a b", "length": 10})
    for a in ARMS:
        for s in range(3):
            run = root / f"{a}-seed{s}"
            run.mkdir()
            rows = []
            for step in range(4):  # 8 samples a step; ppo's steps take 20 s, rloo's 10 s
                row = {"step": step, "seed": s, "reward/mean": 0.3 + 0.01 * step * (s + 1), "kl/mean": 0.01 * step,
                       "reward/std": 0.1, "progress/samples": 8 * (step + 1), "progress/judge_calls": 8 * (step + 1),
                       "progress/wall_s": (20.0 if a == "ppo" else 10.0) * (step + 1), "val/reward": val(a, s, 8 * (step + 1))}
                if step == 0:
                    row["val_start/reward"] = val(a, s, 0)
                rows.append(row)
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            model = f"{a}-seed{s}"
            for pid in range(4):
                eval_rows.append({"model": model, "algorithm": a, "seed": s, "prompt_id": pid, "reward": 0.4 + 0.1 * s,
                                  "normalised": {"helpfulness": 0.6, "verbosity": 0.5 - 0.1 * pid},
                                  "confidence": {"helpfulness": 0.7}, "response": "x y z w", "length": 10 + pid})
                # a judge that always prefers the answer shown first: P(model better | first) = 1, | second = 0
                first, second = (1.0, 0.0) if biased else (1.0, 1.0 if pid < 3 else 0.0)
                pair_rows.append({"model": model, "algorithm": a, "seed": s, "opponent": "base",
                                  "opponent_algorithm": "base", "prompt_id": pid, "p_first": first,
                                  "p_second": second, "length": 10 + pid, "opponent_length": 10})
    (root / "eval").mkdir()
    for name, rows in (("eval.jsonl", eval_rows), ("pairwise.jsonl", pair_rows)):
        (root / "eval" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_equal_samples_and_equal_wall_time_by_hand(tmp_path):
    html = build_report(write(tmp_path / "CMP", biased=False)).read_text(encoding="utf-8")
    # both arms reach 32 samples: ppo 0.3 + 0.04 + seed/1000, mean over seeds 0.341
    assert summary_value(html, "val_at_samples", "ppo") == pytest.approx(0.341)
    assert summary_value(html, "val_at_samples", "rloo") == pytest.approx(0.381)
    # wall time: ppo reaches 80 s, rloo 40 s: both compared at 40 s, where ppo is at 16 samples
    assert summary_value(html, "val_at_wall_s", "ppo") == pytest.approx(0.321)
    assert summary_value(html, "val_at_wall_s", "rloo") == pytest.approx(0.381)
    assert "rloo is higher beyond seed noise" in html
    # gains over the start have a zero-width interval here (seeds shift start and end alike): rloo +0.08
    assert summary_value(html, "val_gain_at_samples", "rloo") == pytest.approx(0.08)
    # the judges are named as they scored
    assert "training judge (training rewards, validation curve) <code>hf packaged" in html
    assert "evaluation judge (held-out scores, win rates) <code>http big-judge" in html


def test_a_position_biased_judge_gives_cannot_tell_not_a_half(tmp_path):
    data = load_compare(write(tmp_path / "CMP", biased=True))
    assert all(p.consistency == 0.0 and p.position_biased and p.rate == 0.5 for p in pairings(data))
    html = build_report(data.path).read_text(encoding="utf-8")
    winrates = html[html.index('<section id="winrates">'):]
    assert "cannot tell" in winrates and "0.500" not in winrates
    assert "ppo vs base: cannot tell: the pairwise judge" in html
    assert math.isnan(summary_value(html, "win_rate", "ppo"))


def test_order_consistent_judge_gives_rates_and_a_length_controlled_rate(tmp_path):
    data = load_compare(write(tmp_path / "CMP", biased=False))
    p = next(p for p in pairings(data) if p.model == "ppo-seed0")
    # prompts 0-2 won in both orders, prompt 3 split: wins [1, 1, 1, .5], consistency 3/4
    assert p.rate == pytest.approx(0.875) and p.consistency == pytest.approx(0.75)
    # Δlength 0..3: mean win .875, mean Δ 1.5, Σ(Δ-Δ̄)² = 5, Σ(w-w̄)(Δ-Δ̄) = -.75, slope -.15: the longer answers
    # won less, so at equal length the fit is .875 + .15·1.5 = 1.1, clipped to 1
    assert p.length_controlled == 1.0
    seed2 = next(p for p in pairings(data) if p.model == "rloo-seed2")
    assert seed2.length_controlled == 1.0 and seed2.rate == pytest.approx(0.875)
    html = build_report(data.path).read_text(encoding="utf-8")
    assert summary_value(html, "win_rate_vs_base", "ppo") == pytest.approx(0.875)


def test_versus_base_distinct_ratio_and_verdicts(tmp_path):
    data = load_compare(write(tmp_path / "CMP", biased=False))
    # seed s: 0.4 + 0.1 s − 0.4 on every prompt
    assert versus_base(data, "rloo", lambda r: r.get("reward")) == pytest.approx([0.0, 0.1, 0.2])
    # verbosity 0.5 − 0.1·pid against 0.5: mean −0.15 for every seed
    assert versus_base(data, "ppo", lambda r: r["normalised"]["verbosity"]) == pytest.approx([-0.15] * 3)
    assert distinct_ngram_ratio(["a b a b"]) == pytest.approx(2 / 3) and distinct_ngram_ratio(["a"]) != 0
    # the longest run of the prompt's words the response repeats, case and punctuation aside
    assert quoted_words("Sure: the cat sat on the MAT, today.", "Did the cat sit? The cat sat on the mat!") == 6
    assert quoted_words("cat the", "the cat") == 1 and quoted_words("", "the cat") == 0
    assert verdict((0.1, 0.05, 0.15)) == "rose" and verdict((0.1, -0.05, 0.15)) == "within noise"
    assert verdict((0.1, math.nan, math.nan)).startswith("cannot tell")
    assert val_curve(data.runs["ppo"][0], "wall_s") == ([0.0, 20.0, 40.0, 60.0, 80.0],
                                                        pytest.approx([0.3, 0.31, 0.32, 0.33, 0.34]))
