"""docs/study/check.py: every number docs/STUDY.md states about the committed run holds, and an altered one fails."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "docs" / "study" / "check.py"
STUDY = ROOT / "docs" / "STUDY.md"


def load_check():
    spec = importlib.util.spec_from_file_location("study_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def alter(text: str, old: str, new: str) -> str:
    """text with old (wherever STUDY.md breaks its lines) replaced by new, once."""
    pattern = r"\s+".join(map(re.escape, old.split()))
    assert len(re.findall(pattern, text)) == 1, old
    return re.sub(pattern, new, text)


def test_every_number_in_study_md_holds():
    run = subprocess.run([sys.executable, str(CHECK)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "MISMATCH" not in run.stdout and run.stdout.rstrip().endswith("numbers hold")


def test_an_altered_number_or_a_reworded_claim_fails(tmp_path, capsys):
    check = load_check()
    text = STUDY.read_text(encoding="utf-8")
    for old, new, claim_id in (
            ("**+0.222 [0.162, 0.282] under RLOO**", "**+0.232 [0.162, 0.282] under RLOO**", "hacking.quoting"),
            ("PPO − RLOO −1.01 [−2.31, +0.29]", "PPO − RLOO −1.01 [−2.31, −0.29]", "kl.last_quarter"),
            ("every later baseline is within 0.002", "every later baseline is within 0.001", "ema_order.later"),
            ("| 0.04 | 11 | 15 | 7 | 9 |", "| 0.04 | 11 | 15 | 7 | 11 |", "sizing.table.0.04"),
            ("Position consistency is 1.000", "Position consistency was 1.000", "consistency")):
        altered = tmp_path / "STUDY.md"
        altered.write_text(alter(text, old, new), encoding="utf-8")
        assert check.main(["--study", str(altered)]) == 1
        failures = capsys.readouterr().out.split("do not hold:")[1]
        assert f"{claim_id}:" in failures and failures.count("\n  ") == 1, failures
