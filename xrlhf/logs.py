"""What a person sees: xrlhf's own progress lines; library warnings and progress bars go to a log file."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

# Loggers of the libraries whose warnings repeat from every actor (FutureWarnings, load reports, bars).
LIBRARY_LOGGERS = ("py.warnings", "transformers", "peft", "accelerate", "torch", "datasets", "huggingface_hub",
                   "filelock", "httpx", "urllib3", "matplotlib")


def quiet_libraries(log_file: Path | None, level: str = "INFO") -> Path | None:
    """Send library warnings (Python warnings included) to log_file instead of the terminal.

    At level DEBUG nothing is hidden. Returns the file written to, or None when nothing is redirected."""
    if level == "DEBUG" or log_file is None:
        return None
    import transformers

    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.propagate = False
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return log_file


def process_log(folder: str | Path, role: str) -> Path:
    """One process's library log inside folder: ROLE-PID.log."""
    return Path(folder) / f"{role}-{os.getpid()}.log"


def eta(done: int, total: int, seconds: float) -> str:
    """'3m20s' left at the mean pace so far ('?' before the first step is done)."""
    if done <= 0:
        return "?"
    left = round(max(0.0, seconds / done * (total - done)))
    h, m, s = left // 3600, left % 3600 // 60, left % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def shown(value: float | None, fmt: str = ".3f") -> str:
    """A metric as metrics.jsonl holds it: 0.0 as 0.000, a missing value (None) as n/a."""
    return "n/a" if value is None else format(value, fmt)


def step_line(run_name: str, step: int, steps: int, row: dict[str, Any], step_s: float, eta_text: str) -> str:
    """The progress line of step `step` (0-based) from its metrics row."""
    missing = f"missing {row['judge/missing']} " if row["judge/missing"] else ""
    return (f"{run_name} step {step + 1}/{steps} reward {shown(row['reward/mean'])}±{shown(row['reward/std'])} "
            f"kl {shown(row['kl/mean'], '.4f')} len {shown(row['response_length/mean'], '.1f')} "
            f"{missing}{step_s:.1f}s, ETA {eta_text}")
