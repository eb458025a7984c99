"""The run directory: config snapshot, metrics and samples (one row per step / sample), atomic checkpoints."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from xrlhf.config import Config, dump_config
from xrlhf.data import read_jsonl

log = logging.getLogger(__name__)
CKPT_PREFIX = "step_"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/Inf become null so every row parses anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunDir:
    """Files of one training run. Rows past the last checkpoint are dropped on resume, so no step repeats."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metrics = self.path / "metrics.jsonl"
        self.samples = self.path / "samples.jsonl"
        self.checkpoints = self.path / "checkpoints"

    def create(self, cfg: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        atomic_write_text(self.path / "config.yaml", dump_config(cfg))

    def write_json(self, name: str, value: Any) -> None:
        """A small whole-file record of the run (placement.json), written atomically."""
        atomic_write_text(self.path / name, json.dumps(value, indent=1) + "\n")

    def append(self, file: Path, rows: list[dict[str, Any]]) -> None:
        with file.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(_clean(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """Keep only rows with row['step'] < step (and drop a torn last line from a kill mid-write)."""
        for file in (self.metrics, self.samples):
            if not file.exists():
                continue
            kept = [line for _, line, row in read_jsonl(file) if row is not None and row.get("step", -1) < step]
            atomic_write_text(file, "".join(k + "\n" for k in kept))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [row for _, _, row in read_jsonl(self.metrics, strict=True)]

    def save_checkpoint(self, step: int, learner_state: dict[str, Any], trainer_state: dict[str, Any],
                        save_adapter: Any, keep_last: int) -> Path:
        """Write step_N/ in a temp folder, rename it into place, then move the `latest` pointer."""
        final = self.checkpoints / f"{CKPT_PREFIX}{step:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.checkpoints))
        save_adapter(str(tmp / "adapter"))
        torch.save(learner_state, tmp / "learner_state.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state))  # written last: the completion marker
        if final.exists():
            # Moved aside in one rename, never deleted in place: a kill mid-delete would leave a torn step_N
            # that `latest` still names. latest_checkpoint() falls back to an older one while step_N is absent.
            os.replace(final, Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.checkpoints)) / "old")
        os.replace(tmp, final)
        atomic_write_text(self.checkpoints / "latest", final.name)
        self._prune(keep_last)
        return final

    def _prune(self, keep_last: int) -> None:
        done = sorted(p for p in self.checkpoints.glob(f"{CKPT_PREFIX}*") if p.is_dir())
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.checkpoints.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint `latest` names if it is complete, else the newest complete one; None without any.

        Temp folders (.tmp-*) from a save that a kill interrupted are never candidates.
        """
        pointer = self.checkpoints / "latest"
        named = self.checkpoints / pointer.read_text().strip() if pointer.exists() else None
        if named is not None and _complete(named):
            return named
        done = sorted((p for p in self.checkpoints.glob(f"{CKPT_PREFIX}*") if _complete(p)), reverse=True)
        if done:
            log.warning("checkpoint %s is missing or incomplete; using %s", named.name if named else "latest",
                        done[0].name)
        return done[0] if done else None

    def load_checkpoint(self, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        trainer_state = json.loads((ckpt / "trainer_state.json").read_text())
        learner_state = torch.load(ckpt / "learner_state.pt", weights_only=False)
        return learner_state, trainer_state


def _complete(ckpt: Path) -> bool:
    return ckpt.is_dir() and all((ckpt / name).exists() for name in ("trainer_state.json", "learner_state.pt", "adapter"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename: readers see the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
