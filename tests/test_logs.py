"""What a person sees from `xrlhf train`: xrlhf's progress lines on the terminal, library warnings in the run's logs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xrlhf.logs import eta, step_line

ROOT = Path(__file__).resolve().parents[1]


def test_eta_is_the_mean_pace_times_what_is_left():
    assert eta(0, 4, 10.0) == "?"
    assert eta(1, 4, 30.0) == "1m30s"
    assert eta(2, 2, 5.0) == "0s"
    assert eta(1, 100, 100.0) == "2h45m"
    assert eta(3, 4, 27.0) == "9s"


def test_the_step_line_prints_what_metrics_jsonl_holds():
    row = {"reward/mean": 0.0, "reward/std": 0.0, "kl/mean": 0.0, "response_length/mean": 12.0, "judge/missing": 0}
    line = step_line("tiny", 0, 3, row, 1.5, "3s")
    assert line == "tiny step 1/3 reward 0.000±0.000 kl 0.0000 len 12.0 1.5s, ETA 3s"
    none = {**row, "reward/mean": None, "reward/std": None, "judge/missing": 16}
    assert "reward n/a±n/a kl 0.0000 len 12.0 missing 16 " in step_line("tiny", 0, 3, none, 1.0, "3s")


@pytest.mark.integration
def test_library_warnings_go_to_the_run_logs_not_the_terminal(tmp_path):
    """LoRA with gradient checkpointing makes transformers warn (FutureWarning) in the learner on every step:
    the warning is in the run's logs/learner-PID.log, the terminal shows the step lines with their ETA."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", "configs/tiny.yaml", "steps=2",
                          "model.lora.enabled=true", "model.gradient_checkpointing=true", f"output_dir={tmp_path}",
                          "--run-dir", str(run)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = out.stdout + out.stderr
    assert "Warning" not in shown.replace("WARNING authentication", ""), shown[-3000:]
    assert "tiny step 1/2" in shown and "tiny step 2/2" in shown and "ETA" in shown
    learner_logs = list((run / "logs").glob("learner-*.log"))
    assert learner_logs and "FutureWarning" in learner_logs[0].read_text()
    assert f"library_logs: {run / 'logs'}" in (run / "config.yaml").read_text()
