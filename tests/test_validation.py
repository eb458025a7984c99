"""xrlhf/driver/validation.py: when the validation curve is sampled, what a validation row holds, progress across a
resume."""
import pytest

from xrlhf.config import load_config
from xrlhf.driver.validation import Progress, validation_due, validation_metrics, validation_prompts
from xrlhf.judge.base import Judgement


def test_validation_due_every_n_steps_and_the_last():
    cfg = load_config("configs/tiny.yaml", ["steps=7", "eval.every_steps=3"])
    assert [s for s in range(7) if validation_due(cfg, s)] == [2, 5, 6]
    off = load_config("configs/tiny.yaml", ["steps=7"])
    assert not any(validation_due(off, s) for s in range(7)) and validation_prompts(off) == []


def test_validation_prompts_are_the_first_of_the_eval_split():
    from xrlhf.data import load_prompts

    cfg = load_config("configs/tiny.yaml", ["eval.every_steps=1", "eval.validation_prompts=3", "eval.num_prompts=5"])
    evaluated = load_prompts("bundled", "eval", limit=5).prompts
    assert validation_prompts(cfg) == evaluated[:3]


def test_validation_metrics_skip_what_the_judge_dropped():
    j = [Judgement({"a": 4, "b": 0}, {"a": 1.0, "b": 0.0}, {}, reward=0.5),
         Judgement({"a": 2, "b": None}, {"a": 0.5, "b": None}, {}, reward=0.4),
         Judgement({"a": None, "b": None}, {"a": None, "b": None}, {}, reward=None)]
    row = validation_metrics(j, [10, 20, 30], ["a", "b"])
    assert row == {"val/reward": pytest.approx(0.45), "val/length": 20.0, "val/scored": 2.0,
                   "val/a": pytest.approx(0.75), "val/b": 0.0}
    assert validation_metrics([], [], ["a"], "val_start")["val_start/reward"] is None


def test_progress_counts_on_across_a_resume():
    p = Progress()
    assert p.advance(8, 8, 30.5) == {"progress/samples": 8, "progress/judge_calls": 8, "progress/wall_s": 30.5}
    row = p.advance(8, 10, 29.5)
    assert row == {"progress/samples": 16, "progress/judge_calls": 18, "progress/wall_s": 60.0}
    resumed = Progress.resume([{"step": 0}, {"step": 1, **row}])
    assert resumed.advance(8, 8, 1.0)["progress/wall_s"] == 61.0 and resumed.samples == 24
    assert Progress.resume([]) == Progress()


@pytest.mark.integration
def test_a_resumed_run_continues_its_progress_and_curve(tmp_path):
    """Train 2 steps, resume to 3 through the real graph: counters go on from the last row, the start point of the
    validation curve is not taken again, and every step keeps its validation point."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root, run = Path(__file__).resolve().parents[1], tmp_path / "run"
    common = ["configs/tiny.yaml", "eval.every_steps=1", "eval.validation_prompts=2", "checkpoint.every=1"]
    for args in (["--run-dir", str(run), "steps=2"], ["--resume", str(run), "steps=3"]):
        done = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", *common, *args], cwd=root,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert [r["progress/samples"] for r in rows] == [16, 32, 48]
    assert rows[2]["progress/wall_s"] == pytest.approx(rows[1]["progress/wall_s"] + rows[2]["time/step"], abs=0.01)
    assert ["val_start/reward" in r for r in rows] == [True, False, False]
    assert all(r["val/scored"] == 2 for r in rows)
