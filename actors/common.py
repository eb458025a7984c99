"""Set-up every actor process runs first."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

import torch

from xrlhf.config import ActorResources, Config, ConfigError
from xrlhf.data import DataError
from xrlhf.logs import process_log, quiet_libraries
from xrlhf.models import ModelError


def setup_process(cfg: Config, res: ActorResources, role: str) -> None:
    """Threads and logging for one actor: torch uses the CPUs Ray gave it (at least one); library warnings go
    to the run's logs/ROLE-PID.log, not to the driver's terminal."""
    threads = res.torch_threads or max(1, int(res.num_cpus) or 1)
    torch.set_num_threads(threads)
    logging.basicConfig(level=cfg.logging.level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if cfg.logging.library_logs:
        quiet_libraries(process_log(cfg.logging.library_logs, role), cfg.logging.level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def keep_user_error(actor: Any) -> Iterator[None]:
    """Keep a bad model, config or data error from __init__ for pid() to raise.

    Ray prints the traceback of an error raised in __init__ into the driver's stderr; an error raised
    by a method only reaches the caller, as a RayTaskError that the CLI reduces to its message.
    """
    actor.init_error = None
    try:
        yield
    except (ConfigError, DataError, ModelError) as exc:
        actor.init_error = exc


def pid(actor: Any) -> int:
    """The actor's process id (tests kill actors by it); raises the error its __init__ kept, if any."""
    if getattr(actor, "init_error", None) is not None:
        raise actor.init_error
    return os.getpid()
