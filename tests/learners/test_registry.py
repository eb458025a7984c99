"""The learner registry (config.LEARNERS) is the one list of algorithms: adding one is one new file plus one entry.
fixed_baseline.py, registered in the driver and in every Ray worker, is accepted by the config and trains one step
through the real actor graph."""
import json
import os
from pathlib import Path

import pytest
import ray

import fixed_baseline
from xrlhf.config import LEARNERS, ConfigError, load_config
from xrlhf.driver.controller import Controller, shutdown_graph

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def test_the_config_checks_names_against_the_registry(monkeypatch):
    with pytest.raises(ConfigError, match="'ppo' or 'reinforce'"):
        load_config(TINY, [f"algorithm.name={fixed_baseline.NAME}"])
    monkeypatch.setitem(LEARNERS, fixed_baseline.NAME, fixed_baseline.SPEC)
    cfg = load_config(TINY, [f"algorithm.name={fixed_baseline.NAME}"])
    assert cfg.algorithm.name == fixed_baseline.NAME
    with pytest.raises(ConfigError, match=f"'ppo', 'reinforce' or '{fixed_baseline.NAME}'"):
        load_config(TINY, ["algorithm.name=a2c"])


@pytest.mark.integration
def test_a_fourth_learner_added_by_one_entry_trains_one_step_on_the_graph(monkeypatch, tmp_path):
    monkeypatch.setitem(LEARNERS, fixed_baseline.NAME, fixed_baseline.SPEC)
    # Local Ray workers inherit this environment, so the new file is importable there, and the hook registers it.
    here = str(Path(fixed_baseline.__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    ray.init(num_cpus=2, include_dashboard=False,
             runtime_env={"worker_process_setup_hook": f"{fixed_baseline.__name__}.register"})
    try:
        cfg = load_config(TINY, [f"algorithm.name={fixed_baseline.NAME}", "steps=1", "checkpoint.every=100"])
        controller = Controller(cfg, tmp_path / "run")
        try:
            run = controller.train()
        finally:
            shutdown_graph(controller)
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["algorithm"] == fixed_baseline.NAME
    assert row["reinforce/baseline"] == fixed_baseline.BASELINE  # the fixed baseline, not REINFORCE's leave-one-out
    assert not row["skipped_update"]
