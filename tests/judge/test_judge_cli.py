import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xrlhf.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_judge_file_scores_rows_and_counts_malformed(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join([json.dumps({"prompt": "p", "response": "eee"}), "{not json",
                              json.dumps({"prompt": "p"}), json.dumps({"prompt": "q", "response": "xyz"})]) + "\n")
    out = _cli("judge", "configs/tiny.yaml", "--input", str(src), "--output", str(tmp_path / "s.jsonl"))
    assert out.returncode == 0, out.stderr
    assert "skipped 2" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows] == ["eee", "xyz"]
    # rule judge: 3 'e' -> 3/(3+2) of the range on every dimension; none -> 0
    assert abs(rows[0]["reward"] - 0.6) < 1e-9 and rows[1]["reward"] == 0.0
    assert set(rows[0]["scores"]) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}


def test_judge_one_prints_a_table():
    out = _cli("judge", "configs/tiny.yaml", "--prompt", "Say e", "--response", "ee")
    assert out.returncode == 0, out.stderr
    assert "helpfulness" in out.stdout and "reward (mean" in out.stdout and "0.500" in out.stdout


def test_judge_file_with_no_usable_rows_is_a_clear_error(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"\xff\xfe garbage\n")
    out = _cli("judge", "configs/tiny.yaml", "--input", str(src), "--output", str(tmp_path / "o.jsonl"))
    assert out.returncode == 1 and "line 1 is not valid UTF-8" in out.stderr and "Traceback" not in out.stderr
