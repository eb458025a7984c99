"""`xrlhf compare` end to end on the tiny model with the verifiable rule judge, two seeds, then `xrlhf report`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from report_cells import summary_value

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["summary", "curves", "dimensions", "attribution", "hacking", "examples", "stability", "timing",
            "winrates"]
FIGURES = ["curves.png", "dimension_curves.png", "eval_dimensions.png", "attribution.png", "hacking.png",
           "timing.png"]
STEPS = 3


def xrlhf(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xrlhf.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_an_arm_beyond_the_model_context_fails_before_any_run(tmp_path):
    """The command checks the config it loaded; each arm's own config is checked before the first run trains."""
    from xrlhf.compare import run_compare
    from xrlhf.config import ConfigError, load_config

    cfg = load_config("configs/tiny.yaml", ["compare.arms={a: {rollout.max_new_tokens: 8}, "
                                            "b: {rollout.max_new_tokens: 300}}"])
    with pytest.raises(ConfigError, match="rollout.max_new_tokens = 300"):
        run_compare(cfg, tmp_path / "CMP")
    assert not list((tmp_path / "CMP").iterdir())


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "CMP"
    run = xrlhf("compare", "configs/tiny.yaml", f"steps={STEPS}", "checkpoint.every=2", "--out", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return out


@pytest.mark.integration
def test_tiny_compare_trains_every_algorithm_and_seed(compared):
    meta = json.loads((compared / "compare.json").read_text())
    assert meta["algorithms"] == ["ppo", "reinforce"] and meta["seeds"] == [0, 1]
    for algorithm in ("ppo", "reinforce"):
        for seed in (0, 1):
            run = compared / f"{algorithm}-seed{seed}"
            rows = read_jsonl(run / "metrics.jsonl")
            assert [r["step"] for r in rows] == list(range(STEPS))
            assert {r["algorithm"] for r in rows} == {algorithm} and {r["seed"] for r in rows} == {seed}
            assert all(r["reward/mean"] is not None for r in rows)
            assert (run / "checkpoints").is_dir()
    # the same prompts per step for both algorithms of one seed; different seeds see a different order
    first = {(a, s): read_jsonl(compared / f"{a}-seed{s}" / "samples.jsonl")[0]["prompt"]
             for a in ("ppo", "reinforce") for s in (0, 1)}
    assert first[("ppo", 0)] == first[("reinforce", 0)] and first[("ppo", 1)] == first[("reinforce", 1)]
    evals = read_jsonl(compared / "eval" / "eval.jsonl")
    assert {r["model"] for r in evals} == {"base", "ppo-seed0", "ppo-seed1", "reinforce-seed0", "reinforce-seed1"}
    pairs = read_jsonl(compared / "eval" / "pairwise.jsonl")
    assert all(p["p_first"] in (0.0, 0.5, 1.0) for p in pairs)
    # each trained model against base on 4 prompts, then PPO against REINFORCE directly, seed by seed
    assert sorted({(p["model"], p["opponent"]) for p in pairs}) == sorted(
        [(f"{a}-seed{s}", "base") for a in ("ppo", "reinforce") for s in (0, 1)]
        + [(f"ppo-seed{s}", f"reinforce-seed{s}") for s in (0, 1)])
    assert len(pairs) == 6 * 4


@pytest.mark.integration
def test_report_is_built_from_the_runs_own_metrics(compared):
    html_path = compared / "report" / "report.html"
    html = html_path.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html, sid
    assert sorted(p.name for p in html_path.parent.glob("*.png")) == sorted(FIGURES)
    assert html.count('<img src="data:image/png;base64,') == len(FIGURES)

    # the summary's final training reward is the mean over seeds of each run's last-step reward
    last = {(a, s): read_jsonl(compared / f"{a}-seed{s}" / "metrics.jsonl")[-1]["reward/mean"]
            for a in ("ppo", "reinforce") for s in (0, 1)}
    for a in ("ppo", "reinforce"):
        assert summary_value(html, "final_reward", a) == pytest.approx((last[(a, 0)] + last[(a, 1)]) / 2, abs=1e-3)

    # change one run's metric on disk, rebuild with `xrlhf report`, and the summary and the curve follow it
    metrics = compared / "ppo-seed0" / "metrics.jsonl"
    rows = read_jsonl(metrics)
    rows[-1]["reward/mean"] = last[("ppo", 0)] + 10.0
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves_before = (html_path.parent / "curves.png").read_bytes()
    run = xrlhf("report", str(compared), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    after = html_path.read_text(encoding="utf-8")
    assert summary_value(after, "final_reward", "ppo") == pytest.approx(
        (last[("ppo", 0)] + 10.0 + last[("ppo", 1)]) / 2, abs=1e-3)
    assert summary_value(after, "final_reward", "reinforce") == pytest.approx(
        summary_value(html, "final_reward", "reinforce"))
    assert (html_path.parent / "curves.png").read_bytes() != curves_before
