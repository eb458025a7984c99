"""`xrlhf judge`: score pairs by hand, from a file or one pair at a time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xrlhf.config import Config
from xrlhf.data import DataError, read_jsonl


def _rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows with string `prompt` and `response`; others are skipped and counted."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows, skipped = [], 0
    for _, _, row in read_jsonl(path):
        if row is not None and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            rows.append(row)
        else:
            skipped += 1
    if not rows:
        raise DataError(f"{path}: no row has string `prompt` and `response` fields ({skipped} skipped)")
    return rows, skipped


def judge_file(cfg: Config, src: Path, dst: Path) -> int:
    """Score every row of src into dst (row + scores, normalised, confidence, reward, missing); returns the count."""
    from xrlhf.judge import build_judge

    rows, skipped = _rows(src)
    judge = build_judge(cfg.judge, cfg.model.name, cfg.model.cache_dir)
    verdicts = judge.score([r["prompt"] for r in rows], [r["response"] for r in rows])
    with dst.open("w", encoding="utf-8") as f:
        for row, v in zip(rows, verdicts):
            f.write(json.dumps({**row, "scores": v.scores, "normalised": v.normalised, "confidence": v.confidence,
                                "rationale": v.rationale, "reward": v.reward, "missing": v.missing}) + "\n")
    if skipped:
        print(f"skipped {skipped} malformed rows of {src}")
    return len(rows)


def judge_one(cfg: Config, prompt: str, response: str) -> str:
    """A table of one pair's per-dimension scores, for reading the reward by hand."""
    from xrlhf.judge import build_judge

    judge = build_judge(cfg.judge, cfg.model.name, cfg.model.cache_dir)
    v = judge.score([prompt], [response])[0]
    lines = [f"{'dimension':<14} {'score':>7} {'normalised':>10} {'confidence':>10} {'weight':>6}"]
    for name, dim in cfg.judge.dimensions.items():
        lines.append(f"{name:<14} {_num(v.scores.get(name)):>7} {_num(v.normalised.get(name)):>10} "
                     f"{_num(v.confidence.get(name)):>10} {dim.weight:>6.2f}")
        if v.rationale.get(name):
            lines.append(f"  rationale: {v.rationale[name]}")
    lines.append(f"reward ({cfg.judge.aggregation}, missing={cfg.judge.missing_policy}): {_num(v.reward)}"
                 + (f"  [{v.missing} dimension(s) missing]" if v.missing else ""))
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "missing" if x is None else f"{x:.3f}"
