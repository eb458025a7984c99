"""What every actor process does first, and the base class that does it once for all four roles."""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from xrlhf.config import ActorResources, Config, ConfigError
from xrlhf.data import DataError
from xrlhf.logs import process_log, quiet_libraries
from xrlhf.policy.models import ModelError


def setup_process(cfg: Config, res: ActorResources, role: str) -> None:
    """Threads and logging for one actor: torch uses the CPUs Ray gave it (at least one); library warnings go
    to the run's logs/ROLE-PID.log, not to the driver's terminal."""
    threads = res.torch_threads or max(1, int(res.num_cpus) or 1)
    torch.set_num_threads(threads)
    logging.basicConfig(level=cfg.logging.level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if cfg.logging.library_logs:
        quiet_libraries(process_log(cfg.logging.library_logs, role), cfg.logging.level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class ActorBase:
    """Config from the driver's dict, the role's threads and logs, then `build()`.

    A bad model, config or data error from `build` is kept for `pid()` to raise: Ray prints the traceback of an
    error raised in __init__ into the driver's stderr, while an error raised by a method only reaches the caller,
    as a RayTaskError that the CLI reduces to its message.
    """

    role = ""  # the key of this role's resources in cfg.resources

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = Config.model_validate(cfg)
        setup_process(self.cfg, getattr(self.cfg.resources, self.role), self.role)
        self.init_error: Exception | None = None
        try:
            self.build()
        except (ConfigError, DataError, ModelError) as exc:
            self.init_error = exc

    def build(self) -> None:
        """Load what the role holds (models, judge)."""

    def whereabouts(self) -> dict[str, Any]:
        """Where this actor runs: its role, process, Ray node, interpreter and the GPU ids Ray assigned it."""
        import sys

        import ray

        ctx = ray.get_runtime_context()
        return {"role": self.role, "pid": os.getpid(), "node_id": ctx.get_node_id(), "python": sys.executable,
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "actor_id": ctx.get_actor_id()}

    def pid(self) -> int:
        """The actor's process id (tests kill actors by it); raises the error `build` kept, if any."""
        if self.init_error is not None:
            raise self.init_error
        return os.getpid()
