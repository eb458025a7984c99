"""xrlhf/report/__init__.py on a synthetic compare directory written in the trainer's exact format."""
import base64
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from report_cells import summary_value
from xrlhf.report import build_report, load_compare

DIMS = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
SECTIONS = ["summary", "curves", "dimensions", "attribution", "hacking", "examples", "stability", "timing",
            "winrates"]
N_STEPS = 6
HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
ARTIFACTS = Path(__file__).parent / "artifacts"


def reward(algorithm: str, seed: int, step: int) -> float:
    """PPO climbs 0.1 a step, REINFORCE 0.08; seed 1 sits a little higher."""
    return (0.1 if algorithm == "ppo" else 0.08) * step + 0.05 * seed


def metrics_row(algorithm: str, seed: int, step: int) -> dict:
    r = reward(algorithm, seed, step)
    row = {"step": step, "algorithm": algorithm, "seed": seed, "policy_version": step, "reward/mean": r,
           "reward/std": 0.3 - 0.02 * step, "confidence/mean": 0.8 - 0.01 * step,
           "kl/mean": 0.9 if step == 3 and seed == 0 else 0.01 * step, "entropy/mean": 2.0,
           "response_length/mean": 40 + 5 * step, "loss/policy": -0.1, "ppo/explained_variance": None,
           "grad_norm": 1.0 + 0.1 * seed, "lr": 1e-5, "time/rollout": 2.0, "time/reference": 0.5,
           "time/judge": 3.0, "time/learner": 1.5 if algorithm == "ppo" else 0.8, "time/sync": 0.2,
           "time/step": 7.5, "tokens_per_s": 100.0, "judge/missing": 0, "judge/dropped": 0,
           "corr/length_reward": 0.1 * step, "skipped_update": step == 2 and algorithm == "reinforce"}
    for i, d in enumerate(DIMS):
        # verbosity climbs while correctness drops: the hacking section must say so
        row[f"score/{d}"] = 0.5 + (0.05 * step if d == "verbosity" else -0.04 * step if d == "correctness" else 0.0)
        row[f"attribution/{d}"] = [0.4, 0.1, 0.1, 0.1, 0.3][i]
    if algorithm == "ppo":
        row.update({"loss/value": 0.2, "ppo/clipfrac": 0.1, "ppo/approx_kl": 0.01})
    else:
        row["reinforce/baseline"] = r - 0.1
    return row


def sample_rows(algorithm: str, seed: int, step: int) -> list[dict]:
    rows = []
    for i in range(3):
        length = 30 + 10 * i + 5 * step
        rows.append({"step": step, "prompt": f"prompt {i}", "response": f"{HOSTILE} answer {i}",
                     "scores": {d: 2 for d in DIMS}, "normalised": {d: 0.5 for d in DIMS},
                     "confidence": {d: 0.8 for d in DIMS}, "kl": 0.01, "reward": 0.01 * length,
                     "advantage": 0.1 * (i - 1), "policy_version": step, "length": length})
    return rows


def eval_row(model: str, algorithm: str, seed, pid: int, score: float) -> dict:
    return {"model": model, "algorithm": algorithm, "seed": seed, "prompt_id": pid, "prompt": f"{HOSTILE} eval {pid}",
            "response": f"{HOSTILE} from {model}", "scores": {d: round(4 * score) for d in DIMS},
            "normalised": {d: score for d in DIMS}, "confidence": {d: 0.9 for d in DIMS}, "reward": score,
            "rationale": {"helpfulness": f"{HOSTILE} rationale"} if model != "base" else {}, "length": 50}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_compare(root: Path, seeds=(0, 1), with_eval: bool = True) -> Path:
    algorithms = ["ppo", "reinforce"]
    runs = {a: [f"{a}-seed{s}" for s in seeds] for a in algorithms}
    root.mkdir(parents=True)
    (root / "compare.json").write_text(json.dumps({
        "algorithms": algorithms, "seeds": list(seeds), "runs": runs,
        "dimensions": {d: {"weight": 1.0, "direction": "higher"} for d in DIMS},
        "command": "xrlhf compare configs/tiny.yaml", "model": "tiny-model", "judge_model": "tiny-judge"}))
    eval_rows, pair_rows = [eval_row("base", "base", None, p, 0.4) for p in range(3)], []
    for a in algorithms:
        for s in seeds:
            run = root / f"{a}-seed{s}"
            run.mkdir()
            (run / "config.yaml").write_text(f"algorithm:\n  name: {a}\nseed: {s}\n")
            write_jsonl(run / "metrics.jsonl", [metrics_row(a, s, t) for t in range(N_STEPS)])
            write_jsonl(run / "samples.jsonl", [x for t in range(N_STEPS) for x in sample_rows(a, s, t)])
            eval_rows += [eval_row(f"{a}-seed{s}", a, s, p, 0.5 + 0.1 * p + 0.05 * s) for p in range(3)]
            # prompt 0: clear win, prompt 1: tie, prompt 2: the judge failed on one order
            for p, (pf, ps) in enumerate([(0.9, 0.7), (0.5, 0.5), (None, 0.6)]):
                pair_rows.append({"model": f"{a}-seed{s}", "algorithm": a, "seed": s, "prompt_id": p,
                                  "p_first": pf, "p_second": ps})
    if with_eval:
        (root / "eval").mkdir()
        write_jsonl(root / "eval" / "eval.jsonl", eval_rows)
        write_jsonl(root / "eval" / "pairwise.jsonl", pair_rows)
    return root


def images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def section_html(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    cmp_dir = make_compare(tmp_path_factory.mktemp("report") / "CMP")
    path = build_report(cmp_dir)
    return path, path.read_text(encoding="utf-8")


def test_load_compare_parses_runs_and_eval(built):
    data = load_compare(built[0].parent.parent)
    assert data.algorithms == ["ppo", "reinforce"] and data.dimensions == DIMS
    assert [r.name for r in data.runs["ppo"]] == ["ppo-seed0", "ppo-seed1"]
    assert data.runs["ppo"][0].steps == list(range(N_STEPS))
    assert math.isnan(data.runs["ppo"][0].series("ppo/explained_variance")[0])
    assert len(data.eval_rows) == 3 * 5 and len(data.pairwise_rows) == 12 and data.missing == []


def test_every_section_and_embedded_figure(built):
    path, html = built
    assert path == built[0].parent / "report.html"
    for sid in SECTIONS:
        section_html(html, sid)
    srcs = images(html)
    assert len(srcs) == 6
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.glob("*.png")) == sorted(
        ["curves.png", "dimension_curves.png", "eval_dimensions.png", "attribution.png", "hacking.png", "timing.png"])
    assert "http://" not in html and "https://" not in html and "<link" not in html


def test_untrusted_text_is_escaped(built):
    html = built[1]
    assert "<script>" not in html and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    examples = section_html(html, "examples")
    assert "judge rationale" in examples and examples.count("<tr>") == 1 + 3


def test_summary_numbers_hand_checked(built):
    html = built[1]
    # last step (tail window 1 of 6): ppo 0.5 and 0.55 → mean 0.525; reinforce 0.4 and 0.45 → 0.425
    assert summary_value(html, "final_reward", "ppo") == pytest.approx(0.525)
    assert summary_value(html, "final_reward", "reinforce") == pytest.approx(0.425)
    # ppo eval rewards per seed: mean(0.5, 0.6, 0.7) = 0.6 and 0.65 → 0.625
    assert summary_value(html, "eval_reward", "ppo") == pytest.approx(0.625)
    # each model: prompt wins (0.9+0.7)/2 = 0.8 and tie 0.5, prompt 2 skipped → 0.65
    assert summary_value(html, "win_rate", "ppo") == pytest.approx(0.65)
    summary = section_html(html, "summary")
    # Welch: var/n = 0.00125/2 on each side, se = √0.00125 = 0.035355, df = 0.00125² / (2·0.000625²) = 2
    # half = 4.303·0.035355 = 0.152 → [−0.052, +0.252] contains 0
    assert "ppo − reinforce final training reward: +0.100 (95% Welch interval [-0.052, +0.252]): within noise" in summary
    assert "verbosity rose while correctness fell" in summary
    # both algorithms score 0.6 and 0.65 on every dimension per seed → difference 0
    assert "helpfulness +0.000 (within noise)" in summary


def test_stability_hacking_and_winrate_tables(built):
    html = built[1]
    stability = section_html(html, "stability")
    # ppo-seed0 KL is 0.01·step except 0.9 at step 3 → the only spike
    assert re.search(r"ppo-seed0</td><td[^>]*>[^<]*</td><td[^>]*>[^<]*</td><td>3</td>", stability)
    assert "rose verbosity; fell correctness" in section_html(html, "hacking")
    winrates = section_html(html, "winrates")
    assert winrates.count("<td class=\"num\">2</td><td class=\"num\">1</td>") == 4  # 2 prompts judged, 1 skipped


def test_changed_metric_changes_summary_and_figure(tmp_path):
    cmp_dir = make_compare(tmp_path / "CMP")
    before = build_report(cmp_dir).read_text(encoding="utf-8")
    metrics = cmp_dir / "ppo-seed0" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows[-1]["reward/mean"] = 2.0
    write_jsonl(metrics, rows)
    after = build_report(cmp_dir).read_text(encoding="utf-8")
    # (2.0 + 0.55) / 2 = 1.275
    assert summary_value(before, "final_reward", "ppo") == pytest.approx(0.525)
    assert summary_value(after, "final_reward", "ppo") == pytest.approx(1.275)
    assert summary_value(after, "final_reward", "reinforce") == pytest.approx(0.425)
    assert images(after)[0] != images(before)[0]  # the reward curve is redrawn
    assert images(after)[-1] == images(before)[-1]  # timing did not change, and PNGs are deterministic


def test_missing_eval_and_single_seed(tmp_path):
    cmp_dir = make_compare(tmp_path / "CMP", seeds=(0,), with_eval=False)
    html = build_report(cmp_dir, tmp_path / "out").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "report.html").exists()
    for sid in SECTIONS:
        section_html(html, sid)
    assert "No evaluation yet" in section_html(html, "dimensions")
    assert "No evaluation yet" in section_html(html, "examples")
    assert "No pairwise judgements yet" in section_html(html, "winrates")
    summary = section_html(html, "summary")
    assert "single seed: no interval" in summary and "cannot tell" in summary
    assert "eval/eval.jsonl" in summary


def test_no_runs_yet_every_section_says_so(tmp_path):
    cmp_dir = make_compare(tmp_path / "CMP", with_eval=False)
    for run in cmp_dir.glob("*-seed*"):
        shutil.rmtree(run)
    html = build_report(cmp_dir).read_text(encoding="utf-8")
    for sid in SECTIONS:
        section_html(html, sid)
    assert images(html) == []
    assert "No training metrics found yet" in section_html(html, "summary")
    assert "No training metrics to plot" in section_html(html, "curves")


def test_torn_last_line_is_skipped(tmp_path):
    cmp_dir = make_compare(tmp_path / "CMP")
    with (cmp_dir / "ppo-seed0" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "reward/me')
    assert load_compare(cmp_dir).runs["ppo"][0].steps == list(range(N_STEPS))
    shutil.rmtree(cmp_dir / "reinforce-seed1")
    data = load_compare(cmp_dir)
    assert [r.name for r in data.runs["reinforce"]] == ["reinforce-seed0"]
    assert "reinforce-seed1/metrics.jsonl" in data.missing


@pytest.mark.browser
def test_report_renders_in_chromium(built):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is not installed")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(built[0].resolve().as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(widths) == 6 and all(w > 0 for w in widths)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_the_dimensions_section_says_what_each_dimension_measures(tmp_path):
    """compare.json's one line per dimension (xrlhf.judge.describe, written by xrlhf compare) is shown
    as a table, escaped; a compare.json without it (an older run) shows none."""
    root = make_compare(tmp_path / "cmp")
    meta = json.loads((root / "compare.json").read_text())
    meta["dimensions"] = {d: {**v, "measures": f"signal of {d} <b>"} for d, v in meta["dimensions"].items()}
    (root / "compare.json").write_text(json.dumps(meta))
    dims = section_html(build_report(root).read_text(), "dimensions")
    assert "What each dimension measures" in dims
    assert all(f"signal of {d} &lt;b&gt;" in dims for d in DIMS)
    old = section_html(build_report(make_compare(tmp_path / "old")).read_text(), "dimensions")
    assert "What each dimension measures" not in old
