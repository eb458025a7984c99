"""The actor graph's lifetime: Ray on this machine or a cluster, the placement group, the four roles' actors,
and ActorRoles, which runs the step's roles (xrlhf.driver.step) on them."""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray

from xrlhf.config import Config, ResourcesConfig
from xrlhf.driver.metrics import sum_stats
from xrlhf.driver.step import Judged, Reference, Rollout, UpdateResult
from xrlhf.exposure import beyond_loopback, require_auth_or_opt_in, start_local_ray
from xrlhf.policy.experience import Experience
from xrlhf.policy.generation import merge_experiences
from xrlhf.policy.models import prepare_packaged

log = logging.getLogger(__name__)


def init_ray(res: ResourcesConfig) -> None:
    """Join the cluster at resources.address / RAY_ADDRESS, or start Ray on this machine, on 127.0.0.1."""
    if ray.is_initialized():
        return
    address = res.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Remote nodes do not share this environment. Ray's runtime-env agent logs these values in clear.
        env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("XRLHF_", "HF_"))}}
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return
    if (os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") or "").lower() in ("1", "true"):
        require_auth_or_opt_in("a local Ray head (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 binds the machine's address)",
                               res.allow_unauthenticated_cluster)
    if res.include_dashboard and beyond_loopback(res.dashboard_host):  # the dashboard accepts jobs: code to run
        require_auth_or_opt_in(f"Ray's dashboard (resources.dashboard_host={res.dashboard_host})",
                               res.allow_unauthenticated_cluster)
    # No runtime_env: local workers inherit this environment, and no secret reaches Ray's logs.
    start_local_ray(num_cpus=res.num_cpus, num_gpus=res.num_gpus, include_dashboard=res.include_dashboard,
                    dashboard_host=res.dashboard_host, log_to_driver=True)
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        log.warning("local Ray listens on %s as well as 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 is set)",
                    node_ip)


@dataclass
class Graph:
    """Handles of one run's actors."""

    rollouts: list[Any]
    reference: Any  # a ReferenceActor, or the learner itself when the reference is colocated
    judges: list[Any]
    learner: Any
    placement_group: Any = None
    max_restarts: int = 0  # resources.max_restarts: how often Ray restarts an actor other than the learner

    def all(self) -> list[Any]:
        extra = [] if self.reference is self.learner else [self.reference]
        return self.rollouts + extra + self.judges + [self.learner]

    def restartable(self, actor: Any) -> bool:
        """Whether Ray restarts this actor when it dies."""
        return restarts("learner" if actor is self.learner else "other", self.max_restarts) > 0


def restarts(role: str, max_restarts: int) -> int:
    """An actor's max_restarts: resources.max_restarts, but never for the learner (a restarted learner would lose
    its weights)."""
    return 0 if role == "learner" else max_restarts


def build_graph(cfg: Config) -> Graph:
    """Create the actors with the resources, restarts and placement that config asks for."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from xrlhf.actors.judge import JudgeActor
    from xrlhf.actors.learner import LearnerActor
    from xrlhf.actors.reference import ReferenceActor
    from xrlhf.actors.rollout import RolloutActor

    # One conversion of the packaged model, here, instead of one per actor racing on the cache.
    from xrlhf.judge import backend

    prepare_packaged([cfg.model.name, *backend(cfg.judge).prepared(cfg.judge, cfg.model.name)], cfg.model.cache_dir)
    res, raw = cfg.resources, cfg.model_dump(mode="json")
    rollout_env = _rollout_runtime_env(cfg)
    roles = ([("rollout", RolloutActor)] * cfg.rollout.num_actors + [("judge", JudgeActor)] * cfg.judge.num_actors
             + [("learner", LearnerActor)] + ([] if res.colocate_reference else [("reference", ReferenceActor)]))
    bundles = [_bundle(getattr(res, role)) for role, _ in roles]
    pg = placement_group(bundles, strategy=res.placement_strategy)
    ray.get(pg.ready(), timeout=res.placement_timeout_s)
    handles: dict[str, list[Any]] = {}
    for i, (role, cls) in enumerate(roles):
        r = getattr(res, role)
        extra = {"runtime_env": rollout_env} if role == "rollout" and rollout_env else {}
        actor = cls.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus, max_restarts=restarts(role, res.max_restarts),
                            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
                            **extra).remote(raw)
        handles.setdefault(role, []).append(actor)
    learner = handles["learner"][0]
    graph = Graph(handles["rollout"], handles.get("reference", [learner])[0], handles["judge"], learner, pg,
                  res.max_restarts)
    try:
        ray.get([a.pid.remote() for a in graph.all()])  # surface construction errors now
    except Exception:
        kill(graph)
        raise
    return graph


def whereabouts(graph: Graph, strategy: str) -> dict[str, Any]:
    """Each actor's role, node, process, interpreter and GPU ids, for the run directory's placement.json."""
    actors = ray.get([a.whereabouts.remote() for a in graph.all()])
    if graph.reference is graph.learner:
        actors.append({**next(a for a in actors if a["role"] == "learner"), "role": "reference (colocated)"})
    return {"strategy": strategy, "nodes": len({a["node_id"] for a in actors}), "actors": actors}


def _rollout_runtime_env(cfg: Config) -> dict[str, Any] | None:
    """The rollout actors' interpreter (rollout.python) as a Ray runtime_env, checked where it can be."""
    python = cfg.rollout.python
    if python is None:
        return None
    if not os.access(python, os.X_OK):
        if cfg.resources.address or os.environ.get("RAY_ADDRESS"):
            # On a cluster the path must exist on the rollout actors' nodes; this machine may lack it.
            log.warning("rollout.python=%s is not an executable on the driver's machine; the rollout actors' nodes "
                        "must have it", python)
            return {"py_executable": python}
        raise ValueError(f"rollout.python={python} is not an executable on this machine: build the environment first "
                         "(scripts/setup_vllm_env.sh makes .venv-vllm/bin/python) or leave rollout.python unset")
    return {"py_executable": python}


def _bundle(r: Any) -> dict[str, float]:
    b = {"CPU": r.num_cpus}
    if r.num_gpus:
        b["GPU"] = r.num_gpus
    return b


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """`items` in order, in at most `parts` consecutive chunks of near-equal size (one per actor)."""
    k = math.ceil(len(items) / parts)
    return [items[i:i + k] for i in range(0, len(items), k)]


class ActorRoles:
    """The step's roles on a graph's actors: prompts split across the rollout actors and samples across the judges,
    each stage's actors called in parallel; the reference pass runs while the judges score."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def generate(self, prompts: list[str], seed: int) -> Rollout:
        g = self.graph
        parts: list[Rollout] = ray.get([r.generate.remote(chunk, seed + i) for i, (r, chunk)
                                        in enumerate(zip(g.rollouts, split(prompts, len(g.rollouts))))])
        return Rollout(merge_experiences([p.experience for p in parts], pad_id=0), max(p.seconds for p in parts),
                       min(p.started for p in parts), max(p.finished for p in parts))

    def reference(self, exp: Experience) -> Callable[[], Reference]:
        future = self.graph.reference.reference_logprobs.remote(exp)
        return lambda: ray.get(future)

    def judge(self, prompts: list[str], responses: list[str]) -> Judged:
        chunks = split(list(range(len(prompts))), len(self.graph.judges))
        parts: list[Judged] = ray.get([j.score.remote([prompts[i] for i in idx], [responses[i] for i in idx])
                                       for j, idx in zip(self.graph.judges, chunks)])
        return Judged([j for p in parts for j in p.judgements], max((p.seconds for p in parts), default=0.0),
                      sum_stats([p.stats for p in parts]))

    def update(self, exp: Experience) -> Callable[[], UpdateResult]:
        future = self.graph.learner.update.remote(exp)
        return lambda: ray.get(future)

    def sync(self) -> float:
        t0 = time.perf_counter()
        state, version = ray.get(self.graph.learner.weights.remote())
        ref = ray.put(state)
        ray.get([r.set_weights.remote(ref, version) for r in self.graph.rollouts])
        return time.perf_counter() - t0


def kill(graph: Graph) -> None:
    """Kill a graph's actors and free its placement group (a finished run gives its memory back)."""
    from ray.util.placement_group import remove_placement_group

    for actor in graph.all():
        ray.kill(actor)
    remove_placement_group(graph.placement_group)
