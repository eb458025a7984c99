"""Set-up every actor process runs first."""
from __future__ import annotations

import logging
import os

import torch

from xrlhf.config import ActorResources, Config


def setup_process(cfg: Config, res: ActorResources) -> None:
    """Threads and logging for one actor: torch uses the CPUs Ray gave it (at least one)."""
    threads = res.torch_threads or max(1, int(res.num_cpus) or 1)
    torch.set_num_threads(threads)
    logging.basicConfig(level=cfg.logging.level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pid() -> int:
    """The actor's process id (tests kill actors by it)."""
    return os.getpid()
