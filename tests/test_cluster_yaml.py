from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_installs_this_project_on_gpu_workers():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    assert workers and all(v["resources"].get("GPU", 0) >= 1 for v in workers.values())
    assert cfg["head_node_type"] in cfg["available_node_types"]
    mounts = cfg["file_mounts"]
    project = next(remote for remote, local in mounts.items() if local == ".")
    setup = " ".join(cfg["setup_commands"])
    assert f"cd {project}" in setup and '-e ".[gpu]"' in setup and "torch==2.13.0" in setup
    # the dashboard the head starts is not exposed beyond the machine
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
