"""bench/'s in-process step is the controller's own (xrlhf.driver.step.run_step on LocalRoles): it runs and learns."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_step_is_run_step_in_process():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from common import Shape, XrlhfStep, train_prompts, xrlhf_config
    finally:
        sys.path.remove(str(ROOT / "bench"))
    step = XrlhfStep(xrlhf_config(Shape("tiny", 2, 2, 6), "reinforce"), train_prompts(8))
    times = [step() for _ in range(2)]
    assert all(set(t) == {"rollout", "reference", "judge", "learner", "step", "step_cpu"} for t in times)
    assert all(0 < t["learner"] <= t["step"] for t in times)
    assert step.learner.version == 2  # each call applied one update
    assert step.last_shape[0] == 4 and step.last_shape[1] > 6  # 2 prompts x 2 samples, prompt + 6 tokens
