"""configs/study.yaml, shrunk by overrides (tiny model, rule judges, 2 steps, 2 seeds, the first run's two other arms
added back), through the real Ray graph, the evaluation and the report: the study's config cannot rot, and every
piece of its machinery runs, arm against arm included."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from report_cells import summary_value
from xrlhf.judge.rule import target_fraction

ROOT = Path(__file__).resolve().parents[1]
ARMS = ["rloo", "ppo", "reinforce_ema"]  # the study's one arm, then the first run's other two
SEEDS = [0, 1]
SHRINK = ["model.name=tiny", "model.lora.enabled=false", "judge.backend=rule", "judge.rule.target=e",
          "judge.aggregation=mean", "steps=2", "compare.seeds=[0, 1]", "rollout.max_new_tokens=8", "rollout.stop=[]",
          "rollout.samples_per_prompt=4", "algorithm.lr=3.0e-3", "checkpoint.every=1", "eval.num_prompts=3",
          "eval.max_new_tokens=8", "eval.every_steps=1", "eval.validation_prompts=2",
          # an evaluation judge that differs from the training judge: it rewards ':' where training rewards 'e'
          "eval.judge.backend=rule", "eval.judge.rule.target=':'", "eval.judge.aggregation=mean",
          "eval.pairwise=true", "compare.arms.ppo.algorithm.name=ppo", "compare.arms.reinforce_ema.algorithm.name=reinforce",
          "compare.arms.reinforce_ema.algorithm.reinforce.baseline=ema",
          "compare.arms.reinforce_ema.algorithm.reinforce.ema_decay=0.99",
          "compare.arms.reinforce_ema.algorithm.reinforce.ema_init=zero"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "CMP"
    run = subprocess.run([sys.executable, "-m", "xrlhf.cli", "compare", "configs/study.yaml", *SHRINK, "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return out


@pytest.mark.integration
def test_study_arms_train_with_their_own_settings_and_validation_curves(study):
    meta = json.loads((study / "compare.json").read_text())
    assert meta["algorithms"] == ARMS and meta["seeds"] == SEEDS
    assert meta["judges"] == {"training": "rule (target 'e')", "evaluation": "rule (target ':')",
                              "evaluation_is_training": False}
    expected = {"ppo": ("ppo", "loo"), "reinforce_ema": ("reinforce", "ema"), "rloo": ("reinforce", "loo")}
    first_prompts = {}
    for arm in ARMS:
        for seed in SEEDS:
            run = study / f"{arm}-seed{seed}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert (cfg["algorithm"]["name"], cfg["algorithm"]["reinforce"]["baseline"]) == expected[arm]
            assert (cfg["seed"], cfg["run_name"]) == (seed, f"{arm}-seed{seed}")
            if arm == "reinforce_ema":
                assert (cfg["algorithm"]["reinforce"]["ema_decay"], cfg["algorithm"]["reinforce"]["ema_init"]) == (
                    0.99, "zero")
            rows = read_jsonl(run / "metrics.jsonl")
            assert [r["step"] for r in rows] == [0, 1]
            # 4 prompts x 4 samples a step; the rule judge counts one request per response
            assert [r["progress/samples"] for r in rows] == [16, 32]
            assert [r["progress/judge_calls"] for r in rows] == [16, 32]
            assert 0 < rows[0]["progress/wall_s"] < rows[1]["progress/wall_s"]
            assert rows[1]["progress/wall_s"] == pytest.approx(rows[0]["time/step"] + rows[1]["time/step"], abs=0.01)
            assert all(r["val/scored"] == 2 and 0 <= r["val/reward"] <= 1 for r in rows)
            assert rows[0]["val_start/scored"] == 2 and "val_start/reward" not in rows[1]
            if arm == "reinforce_ema":  # the study's baseline: the first batch sees 0
                assert rows[0]["reinforce/baseline"] == 0.0
            first_prompts[(arm, seed)] = read_jsonl(run / "samples.jsonl")[0]["prompt"]
    for seed in SEEDS:  # same prompts per seed across arms
        assert len({first_prompts[(a, seed)] for a in ARMS}) == 1


@pytest.mark.integration
def test_validation_uses_the_training_judge_and_evaluation_its_own(study):
    evals = read_jsonl(study / "eval" / "eval.jsonl")
    base = sorted((r for r in evals if r["model"] == "base"), key=lambda r: r["prompt_id"])
    # the two judges disagree on these responses, so a swapped judge would show
    assert any(target_fraction(r["response"], ":") != target_fraction(r["response"], "e") for r in base)
    for r in evals:
        assert r["reward"] == pytest.approx(target_fraction(r["response"], ":"))
    # before training every run's policy is the base model: its greedy answers to the first two eval prompts,
    # scored by the training judge ('e'), are the start of every validation curve
    start = sum(target_fraction(r["response"], "e") for r in base[:2]) / 2
    for arm in ARMS:
        for seed in SEEDS:
            row = read_jsonl(study / f"{arm}-seed{seed}" / "metrics.jsonl")[0]
            assert row["val_start/reward"] == pytest.approx(start)
    assert json.loads((study / "eval" / "judge.json").read_text())["evaluation"] == "rule (target ':')"


@pytest.mark.integration
def test_pairwise_has_every_arm_against_base_and_each_other_by_seed(study):
    pairs = read_jsonl(study / "eval" / "pairwise.jsonl")
    expected = [(f"{a}-seed{s}", "base") for a in ARMS for s in SEEDS]
    expected += [(f"{a}-seed{s}", f"{b}-seed{s}") for i, a in enumerate(ARMS) for b in ARMS[i + 1:] for s in SEEDS]
    assert sorted({(p["model"], p["opponent"]) for p in pairs}) == sorted(expected)
    assert len(pairs) == len(expected) * 3
    evals = {(r["model"], r["prompt_id"]): r for r in read_jsonl(study / "eval" / "eval.jsonl")}
    for p in pairs:
        assert p["length"] == evals[(p["model"], p["prompt_id"])]["length"]
        assert p["opponent_length"] == evals[(p["opponent"], p["prompt_id"])]["length"]
        # the rule judge compares rewards: the same verdict whichever response is shown first
        mine, theirs = evals[(p["model"], p["prompt_id"])]["reward"], evals[(p["opponent"], p["prompt_id"])]["reward"]
        assert p["p_first"] == p["p_second"] == (0.5 if mine == theirs else float(mine > theirs))


@pytest.mark.integration
def test_study_report_answers_each_planned_question(study):
    html = (study / "report" / "report.html").read_text(encoding="utf-8")
    assert '<section id="study">' in html and (study / "report" / "validation.png").is_file()
    assert "rule (target &#x27;e&#x27;)" in html and "rule (target &#x27;:&#x27;)" in html
    for arm in ARMS:
        for metric in ("val_at_samples", "val_at_wall_s", "eval_gain", "final_kl", "reward_step_noise", "kl_spikes",
                       "hacking/length", "hacking/distinct2", "hacking/quoting", "hacking/entropy_drift",
                       "win_rate_vs_base"):
            assert re.search(rf'data-metric="{re.escape(metric)}" data-algorithm="{arm}"', html), (metric, arm)
    for h in ("equal samples", "equal wall time", "The KL each paid", "Stability", "Which dimensions moved",
              "Reward hacking"):
        assert h in html, h
    assert 'data-metric="win_rate_vs_reinforce_ema" data-algorithm="ppo"' in html
    assert "rloo vs ppo: " in html
    # held-out reward at equal samples is each seed's last validation point (both runs end at 32 samples)
    last = {s: read_jsonl(study / f"rloo-seed{s}" / "metrics.jsonl")[-1]["val/reward"] for s in SEEDS}
    assert summary_value(html, "val_at_samples", "rloo") == pytest.approx(sum(last.values()) / 2)
