"""A Ray cluster of several nodes on this machine (ray.cluster_utils.Cluster: one raylet per node, logical GPUs):
the graph is placed across the nodes by the configured strategy, and losing a worker node mid-run never loses a
finished step."""
import json
import sys
import time
from pathlib import Path

import pytest
import ray

from faults import rows, train_in_thread, wait_rows
from xrlhf.config import load_config
from xrlhf.driver.controller import ActorLostError, Controller, shutdown_graph

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
ROLES = {"RolloutActor": "rollout", "JudgeActor": "judge", "LearnerActor": "learner", "ReferenceActor": "reference"}


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # The driver's node runs no actor; a dead node is noticed after ~3 s instead of Ray's default ~30 s.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": {
        "health_check_period_ms": 1000, "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000}})
    workers = [c.add_node(num_cpus=2, num_gpus=2) for _ in range(3)]
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _placement() -> dict[str, list[str]]:
    """{node id: [roles of the live xrlhf actors on it]}."""
    from ray.util.state import list_actors

    out: dict[str, list[str]] = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")]):
        if a.class_name in ROLES:
            out.setdefault(a.node_id, []).append(ROLES[a.class_name])
    return out


def _config(cluster, *overrides: str):
    return load_config(ROOT / "configs/tiny.yaml", [
        f"resources.address={cluster.address}", "resources.placement_strategy=SPREAD",
        "resources.colocate_reference=false", "rollout.num_actors=2", "checkpoint.every=2", *overrides])


def test_spread_places_the_graph_across_nodes_and_survives_losing_a_worker_node(cluster, tmp_path):
    """Also: rollout.python becomes the rollout actors' interpreter (Ray's py_executable; a link to this
    interpreter here, .venv-vllm/bin/python for the vLLM backend on CPU) while the other roles keep the
    driver's, and placement.json in the run directory says where each actor runs."""
    c, workers = cluster
    link = tmp_path / "bin" / "python-rollout"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    cfg = _config(c, "steps=24", "resources.learner.num_gpus=1", "resources.reference.num_gpus=1",
                  f"rollout.python={link}")
    controller = Controller(cfg, tmp_path / "run")
    thread, errors = train_in_thread(controller)
    try:
        wait_rows(tmp_path / "run" / "metrics.jsonl", 4, 240, thread.is_alive)
        placed = _placement()
        assert len(placed) == 3, placed  # SPREAD: five actors over three nodes, none on the head
        assert c.head_node.node_id not in placed
        gpu_roles = {r for roles in placed.values() for r in roles} & {"learner", "reference"}
        assert gpu_roles == {"learner", "reference"}
        recorded = json.loads((tmp_path / "run" / "placement.json").read_text())
        assert recorded["strategy"] == "SPREAD" and recorded["nodes"] == 3
        assert {a["node_id"]: a["role"] for a in recorded["actors"]}.keys() == placed.keys()
        assert sorted(a["role"] for a in recorded["actors"]) == sorted(r for roles in placed.values() for r in roles)
        assert all(len(a["gpu_ids"]) == 1 for a in recorded["actors"] if a["role"] in ("learner", "reference"))
        assert {a["python"] for a in recorded["actors"] if a["role"] == "rollout"} == {str(link)}
        assert {a["python"] for a in recorded["actors"] if a["role"] != "rollout"} == {sys.executable}
        # lose a worker node that does not hold the learner (it has no restarts: its optimiser lives there)
        victim = next(n for n in workers if n.node_id in placed and "learner" not in placed[n.node_id])
        lost = placed[victim.node_id]
        c.remove_node(victim, allow_graceful=False)
        thread.join(timeout=600)
    finally:
        if thread.is_alive():
            thread.join(timeout=5)
        shutdown_graph(controller)
    assert not thread.is_alive() and not errors, errors
    metrics = rows(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(24)), (lost, [m["step"] for m in metrics])
    samples = rows(tmp_path / "run" / "samples.jsonl")
    assert sorted({s["step"] for s in samples}) == list(range(24))
    # placement.json was written again (after the retried step and at the end): the lost node's actors live
    # elsewhere now
    after = json.loads((tmp_path / "run" / "placement.json").read_text())
    assert victim.node_id not in {a["node_id"] for a in after["actors"]}, (victim.node_id, after)
    assert sorted(a["role"] for a in after["actors"]) == sorted(a["role"] for a in recorded["actors"])


def test_losing_the_learners_node_stops_with_its_checkpoint_and_resumes(cluster, tmp_path):
    c, workers = cluster
    cfg = _config(c, "steps=16")
    controller = Controller(cfg, tmp_path / "run")
    thread, errors = train_in_thread(controller)
    try:
        wait_rows(tmp_path / "run" / "metrics.jsonl", 5, 240, thread.is_alive)
        placed = _placement()
        victim = next(n for n in workers if "learner" in placed.get(n.node_id, []))
        c.remove_node(victim, allow_graceful=False)
        lost_at = time.monotonic()
        thread.join(timeout=600)
        stopped_after = time.monotonic() - lost_at
    finally:
        shutdown_graph(controller)
    assert not thread.is_alive() and errors, "losing the learner must stop the run"
    # at once, saying why and from where to resume: not after waiting out the restarts a learner never gets
    # (it waited the whole 120 s of _wait_for_actors before)
    assert isinstance(errors[0], ActorLostError), errors
    assert "the learner died" in str(errors[0]) and f"--resume {tmp_path / 'run'}" in str(errors[0]), errors[0]
    assert stopped_after < 60, stopped_after
    done = rows(tmp_path / "run" / "metrics.jsonl")
    steps = [m["step"] for m in done]
    assert steps == list(range(len(steps))) and len(steps) >= 5  # every finished step is there, once
    c.add_node(num_cpus=2, num_gpus=2)  # capacity back, as an autoscaler would
    c.wait_for_nodes()
    resumed = Controller(cfg, tmp_path / "run", resume=True)
    try:
        resumed.train()
    finally:
        shutdown_graph(resumed)
    after = rows(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in after] == list(range(16))


def test_a_local_run_starts_its_own_ray_beside_a_running_cluster(cluster, tmp_path):
    """With a cluster already on this machine (as `ray start` leaves one), `xrlhf train` without an address starts
    a Ray of its own instead of joining that cluster (where asking for num_cpus is an error)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", "configs/tiny.yaml", "steps=1",
                          "--run-dir", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [m["step"] for m in rows(tmp_path / "run" / "metrics.jsonl")] == [0]
    assert "Connecting to existing Ray cluster" not in out.stderr
