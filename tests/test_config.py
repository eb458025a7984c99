import os
import subprocess
import sys

import pytest

from xrlhf.config import ConfigError, dump_config, load_config

QUICK = "configs/quickstart.yaml"


def test_quickstart_loads_with_defaults():
    cfg = load_config(QUICK)
    assert cfg.model.name == "packaged"
    assert set(cfg.judge.dimensions) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}


def test_dotted_overrides_get_yaml_types():
    cfg = load_config(QUICK, ["algorithm.kl_coef=0.05", "judge.dimensions.verbosity.weight=0",
                              "judge.dimensions.verbosity.direction=lower", "compare.seeds=[1, 2]"])
    assert cfg.algorithm.kl_coef == 0.05
    assert cfg.judge.dimensions["verbosity"].weight == 0.0
    assert cfg.judge.dimensions["verbosity"].direction == "lower"
    assert cfg.compare.seeds == [1, 2]


@pytest.mark.parametrize("override, named, expected", [
    ("bogus.key=1", "bogus.key", "not one of"),
    ("algorithm.ppo.bogus=1", "algorithm.ppo.bogus", "not one of"),
    ("rollout.prompts_per_step=abc", "rollout.prompts_per_step", "valid integer"),
    ("rollout.prompts_per_step=-4", "rollout.prompts_per_step", "greater than 0"),
    ("algorithm.ppo.clip_range=0", "algorithm.ppo.clip_range", "greater than 0"),
    ("algorithm.name=a2c", "algorithm.name", "'ppo' or 'reinforce'"),
    ("steps=1.5", "steps", "integer"),
])
def test_bad_overrides_name_key_value_and_expectation(override, named, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(QUICK, [override])
    msg = str(exc.value)
    assert named in msg and expected in msg
    assert override.split("=", 1)[1] in msg


def test_weights_summing_to_zero_fail():
    zero = [f"judge.dimensions.{d}.weight=0" for d in
            ("helpfulness", "correctness", "coherence", "complexity", "verbosity")]
    with pytest.raises(ConfigError, match="weights sum to 0"):
        load_config(QUICK, zero)


def test_loo_needs_groups():
    with pytest.raises(ConfigError, match="samples_per_prompt >= 2"):
        load_config(QUICK, ["algorithm.name=reinforce", "rollout.samples_per_prompt=1"])


def test_template_placeholders_checked():
    with pytest.raises(ConfigError, match=r"\{response\}"):
        load_config(QUICK, ["judge.template='rate {prompt} on {dimension}: {definition}'"])


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n  model: {")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_dump_holds_env_var_names_not_secrets(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-planted-secret")
    cfg = load_config(QUICK, ["judge.http.api_key_env=JUDGE_KEY"])
    text = dump_config(cfg)
    assert "JUDGE_KEY" in text and "sk-planted-secret" not in text


@pytest.mark.parametrize("override, named, last", [("bogus.key=1", "bogus.key", False),
                                                   ("rollout.max_new_tokens=many", "rollout.max_new_tokens", False),
                                                   ("algorithm.lr=-1", "algorithm.lr", False),
                                                   ("algorithm.lr=-1", "algorithm.lr", True)])
def test_cli_fails_fast_before_any_model_loads(override, named, last, tmp_path):
    options = ["--run-dir", str(tmp_path / "r")]
    argv = [QUICK, *options, override] if last else [QUICK, override, *options]  # overrides after the options too
    out = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert named in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("overrides, named, limit", [
    (["rollout.max_new_tokens=100000000"], "rollout.max_new_tokens = 100000000", "32768"),
    (["eval.max_new_tokens=32700"], "eval.max_new_tokens = 32700", "32768"),
    (["data.max_prompt_tokens=40000"], "data.max_prompt_tokens = 40000", "32768"),
    (["model.name=tiny", "rollout.max_new_tokens=500"], "rollout.max_new_tokens = 500", "512")])
def test_generation_beyond_the_model_context_is_a_config_error(overrides, named, limit, tmp_path):
    """Prompt + response tokens past the policy's context: a one-line error naming the key and the limit,
    before Ray or any model starts (the packaged model's limit is known without converting it)."""
    env = {**os.environ, "XRLHF_CACHE": str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", QUICK, *overrides, "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and named in line and limit in line and "Traceback" not in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "empty-cache").exists()


def test_generation_within_the_context_passes_the_check():
    from xrlhf.config import check_context

    check_context(load_config(QUICK, ["model.name=tiny", "data.max_prompt_tokens=256", "rollout.max_new_tokens=256"]))
    with pytest.raises(ConfigError, match="at most 256"):
        check_context(load_config(QUICK, ["model.name=tiny", "data.max_prompt_tokens=256", "rollout.max_new_tokens=257"]))


def test_cli_rejects_stray_arguments_that_are_not_overrides():
    from xrlhf.cli import parse_args

    args = parse_args(["judge", QUICK, "--prompt", "P", "--response", "R", "judge.cache=false", "seed=3"])
    assert args.overrides == ["judge.cache=false", "seed=3"] and args.prompt == "P"
    with pytest.raises(SystemExit):
        parse_args(["judge", QUICK, "--prompt", "P", "not-an-override"])
    with pytest.raises(SystemExit):
        parse_args(["report", "some/dir", "--out", "o", "seed=3"])  # report takes no overrides
