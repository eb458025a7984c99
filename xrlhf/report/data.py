"""Read a compare directory (compare.json, per-run metrics/samples, eval/) into plain data, and the numbers the report states."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xrlhf.data import read_jsonl
from xrlhf.stats import (MIN_POSITION_CONSISTENCY, finite, length_controlled_win_rate, position_consistency,
                         prompt_wins)

log = logging.getLogger(__name__)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn or blank line (a run still writing) is skipped, a missing file is []."""
    if not path.exists():
        return []
    return [row for _, _, row in read_jsonl(path) if row is not None]


def _num(value: Any) -> float:
    """A metric value as float; None, booleans and non-numbers become nan."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


@dataclass
class Run:
    """One training run (algorithm, seed): its metrics rows sorted by step and its samples."""

    name: str
    algorithm: str
    seed: int | None
    metrics: list[dict[str, Any]]
    samples: list[dict[str, Any]]

    @property
    def steps(self) -> list[int]:
        return [int(r["step"]) for r in self.metrics]

    def series(self, key: str) -> list[float]:
        """Values of `key` per step; nan where the key is absent or null."""
        return [_num(r.get(key)) for r in self.metrics]

    def has(self, key: str) -> bool:
        return bool(finite(self.series(key)))


@dataclass
class CompareData:
    """Everything the report reads from one compare directory."""

    path: Path
    meta: dict[str, Any]
    algorithms: list[str]
    dimensions: list[str]
    runs: dict[str, list[Run]]
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    pairwise_rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def all_runs(self) -> list[Run]:
        return [r for a in self.algorithms for r in self.runs.get(a, [])]


def load_compare(compare_dir: Path) -> CompareData:
    """Parse CMP/compare.json, each listed run dir and CMP/eval/; absent runs or eval files are noted, not fatal."""
    compare_dir = Path(compare_dir)
    meta_path = compare_dir / "compare.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: is {compare_dir} a directory written by `xrlhf compare`?")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    algorithms = list(meta.get("algorithms", []))
    names = meta.get("runs") or {a: [f"{a}-seed{s}" for s in meta.get("seeds", [])] for a in algorithms}
    missing, runs = [], {}
    for algorithm in algorithms:
        runs[algorithm] = []
        for name in names.get(algorithm, []):
            run = _load_run(compare_dir / name, algorithm)
            if run.metrics:
                runs[algorithm].append(run)
            else:
                missing.append(f"{name}/metrics.jsonl")
    eval_dir = compare_dir / "eval"
    for file in ("eval.jsonl", "pairwise.jsonl"):
        if not (eval_dir / file).exists():
            missing.append(f"eval/{file}")
    return CompareData(path=compare_dir, meta=meta, algorithms=algorithms, dimensions=list(meta.get("dimensions", {})),
                       runs=runs, eval_rows=read_rows(eval_dir / "eval.jsonl"),
                       pairwise_rows=read_rows(eval_dir / "pairwise.jsonl"), missing=missing)


def _load_run(path: Path, algorithm: str) -> Run:
    metrics = sorted((r for r in read_rows(path / "metrics.jsonl") if isinstance(r.get("step"), int)),
                     key=lambda r: r["step"])
    seed = metrics[0].get("seed") if metrics else None
    return Run(name=path.name, algorithm=algorithm, seed=seed, metrics=metrics,
               samples=read_rows(path / "samples.jsonl"))


def tail_window(n: int) -> int:
    """Steps averaged for a "final" value: the last tenth of the run, at least one step."""
    return max(1, n // 10)


def final_value(run: Run, key: str) -> float:
    """Mean of `key` over the last tenth of the run's steps (nan if none of them has a value)."""
    values = run.series(key)
    xs = finite(values[-tail_window(len(values)):])
    return sum(xs) / len(xs) if xs else math.nan


def early_late_delta(run: Run, key: str) -> float:
    """Mean of `key` over the last quarter of steps minus the mean over the first quarter."""
    values = run.series(key)
    q = max(1, len(values) // 4)
    early, late = finite(values[:q]), finite(values[-q:])
    if not early or not late:
        return math.nan
    return sum(late) / len(late) - sum(early) / len(early)


def aligned(runs: list[Run], key: str) -> tuple[list[int], list[list[float]]]:
    """(steps, one row per run) on the union of steps, nan where a run lacks that step."""
    steps = sorted({s for r in runs for s in r.steps})
    rows = []
    for run in runs:
        by_step = dict(zip(run.steps, run.series(key)))
        rows.append([by_step.get(s, math.nan) for s in steps])
    return steps, rows


def eval_by_model(data: CompareData) -> dict[str, list[dict[str, Any]]]:
    """Eval rows grouped by model name, in file order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in data.eval_rows:
        out.setdefault(str(row.get("model")), []).append(row)
    return out


def model_algorithm(rows: list[dict[str, Any]]) -> str:
    return str(rows[0].get("algorithm", "base")) if rows else "base"


def eval_mean(rows: list[dict[str, Any]], dim: str | None = None) -> float:
    """Mean reward (dim None) or mean normalised score of one dimension over a model's eval rows."""
    values = [r.get("reward") if dim is None else (r.get("normalised") or {}).get(dim) for r in rows]
    xs = finite(values)
    return sum(xs) / len(xs) if xs else math.nan


@dataclass
class Pairing:
    """One model against one opponent (base, or another arm's run of the same seed) on the eval prompts."""

    model: str
    algorithm: str
    opponent: str
    opponent_algorithm: str
    seed: int | None
    wins: list[float]  # per prompt with both verdicts, (p_first + p_second) / 2
    skipped: int
    consistency: float  # share of prompts whose two orders agree (stats.position_consistency)
    length_controlled: float  # stats.length_controlled_win_rate

    @property
    def rate(self) -> float:
        return sum(self.wins) / len(self.wins) if self.wins else math.nan

    @property
    def position_biased(self) -> bool:
        """The two orders disagree too often for the win rate to say anything (stats.MIN_POSITION_CONSISTENCY)."""
        return not self.consistency >= MIN_POSITION_CONSISTENCY  # nan counts as biased: nothing to go on


def pairings(data: CompareData) -> list[Pairing]:
    """Every (model, opponent) of pairwise.jsonl, in file order; rows without an opponent are against base."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in data.pairwise_rows:
        grouped.setdefault((str(row.get("model")), str(row.get("opponent") or "base")), []).append(row)
    out = []
    for (model, opponent), rows in grouped.items():
        first, second = [r.get("p_first") for r in rows], [r.get("p_second") for r in rows]
        wins, skipped = prompt_wins(first, second)
        both = [r for r in rows if len(finite([r.get("p_first"), r.get("p_second")])) == 2]
        diffs = [_num(r.get("length")) - _num(r.get("opponent_length")) for r in both]
        out.append(Pairing(model, str(rows[0].get("algorithm")), opponent,
                           str(rows[0].get("opponent_algorithm") or "base"), rows[0].get("seed"), wins, skipped,
                           position_consistency(first, second), length_controlled_win_rate(wins, diffs)))
    return out


def wins_by_model(data: CompareData) -> dict[str, tuple[str, list[float], int]]:
    """{model: (algorithm, per-prompt wins over base, prompts skipped)} from pairwise.jsonl."""
    return {p.model: (p.algorithm, p.wins, p.skipped) for p in pairings(data) if p.opponent == "base"}


VAL_AXES = {"step": "updates (steps)", "samples": "samples generated", "judge_calls": "judge calls (training)",
            "wall_s": "wall seconds (training steps)"}


def val_curve(run: Run, axis: str = "samples", key: str = "reward") -> tuple[list[float], list[float]]:
    """The run's held-out validation curve of val/<key>: the policy before training at x = 0 (val_start), then
    after each validated step at x = its updates, or cumulative progress/<axis> (samples, judge_calls, wall_s)."""
    if axis not in VAL_AXES:
        raise ValueError(f"axis must be one of {list(VAL_AXES)}, got {axis!r}")
    xs, ys = [], []
    for row in run.metrics:
        start = _num(row.get(f"val_start/{key}"))
        if math.isfinite(start):
            xs.append(0.0)
            ys.append(start)
        value = _num(row.get(f"val/{key}"))
        if math.isfinite(value):
            xs.append(float(row["step"] + 1) if axis == "step" else _num(row.get(f"progress/{axis}")))
            ys.append(value)
    return xs, ys


def common_reach(runs: list[Run], axis: str) -> float:
    """The furthest x every run's validation curve reaches (nan when some run has none): where they can be compared."""
    ends = [max(finite(val_curve(r, axis)[0]), default=math.nan) for r in runs]
    return min(ends) if ends and all(math.isfinite(e) for e in ends) else math.nan
