import os
import subprocess
import sys
from pathlib import Path

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


def test_4bit_full_fine_tuning_is_a_config_error():
    with pytest.raises(ConfigError, match="load_in_4bit=true needs model.lora.enabled=true"):
        load_config(QUICK, ["model.load_in_4bit=true", "model.lora.enabled=false"])
    assert load_config(QUICK, ["model.load_in_4bit=true"]).model.lora.enabled


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


def test_cli_rejects_stray_arguments_that_are_not_overrides():
    from xrlhf.cli import parse_args

    args = parse_args(["judge", QUICK, "--prompt", "P", "--response", "R", "judge.cache=false", "seed=3"])
    assert args.overrides == ["judge.cache=false", "seed=3"] and args.prompt == "P"
    with pytest.raises(SystemExit):
        parse_args(["judge", QUICK, "--prompt", "P", "not-an-override"])
    with pytest.raises(SystemExit):
        parse_args(["report", "some/dir", "--out", "o", "seed=3"])  # report takes no overrides


def test_compare_arms_named_override_maps():
    from xrlhf.compare import arm_config, arms, run_names

    cfg = load_config("docs/study/earlier/study-192.yaml")  # the first run's three arms
    assert list(arms(cfg)) == ["ppo", "reinforce_ema", "rloo"] and len(cfg.compare.seeds) >= 3
    ema = arm_config(cfg, "reinforce_ema", 2)
    assert (ema.run_name, ema.seed, ema.algorithm.name) == ("reinforce_ema-seed2", 2, "reinforce")
    assert (ema.algorithm.reinforce.baseline, ema.algorithm.reinforce.ema_decay,
            ema.algorithm.reinforce.ema_init) == ("ema", 0.99, "zero")
    assert arm_config(cfg, "rloo", 0).algorithm.reinforce.baseline == "loo"
    assert arm_config(cfg, "ppo", 0).algorithm.name == "ppo"
    # nested maps and dotted keys are the same; a command-line override reaches one arm only
    over = load_config("docs/study/earlier/study-192.yaml", ["compare.arms.rloo.algorithm.lr=0.5"])
    assert arm_config(over, "rloo", 0).algorithm.lr == 0.5
    assert arm_config(over, "ppo", 0).algorithm.lr == cfg.algorithm.lr != 0.5
    # the old form: one arm per algorithm, named after it
    old = load_config("configs/tiny.yaml")
    assert run_names(old) == {"ppo": ["ppo-seed0", "ppo-seed1"], "reinforce": ["reinforce-seed0", "reinforce-seed1"]}


@pytest.mark.parametrize("override,named", [
    ("compare.arms.x.algorithm.nme=1", "compare.arms.x: unknown config key 'algorithm.nme'"),
    ("compare.arms={a-b: {algorithm.name: ppo}}", "arm name 'a-b'"),
    ("compare.arms={a: {seed: 3}}", "compare.arms.a.seed: an arm cannot set seed"),
    ("compare.arms={a: {algorithm.reinforce.baseline: loo, rollout.samples_per_prompt: 1}}",
     "compare.arms.a: invalid config"),
    ("compare.arms={}", "compare.arms must name at least one arm"),
    ("compare.algorithms=[ppo, a2c]", "compare.algorithms.1 = 'a2c': Value error, should be 'ppo' or 'reinforce'"),
    ("compare.arms={a: {algorithm.name: a2c}}", "should be 'ppo' or 'reinforce'"),
    ("eval.judge.dimensions={x: {definition: y}}", "eval.judge.dimensions ['x'] must name the training judge's"),
    ("eval.judge.bogus=1", "unknown config key 'eval.judge.bogus'"),
    ("eval.every_steps=-1", "eval.every_steps"),
])
def test_bad_arms_and_eval_judge_name_the_key(override, named):
    with pytest.raises(ConfigError) as err:
        load_config("configs/tiny.yaml", [override])
    assert named in str(err.value)


def test_eval_judge_is_its_own_judge_or_the_training_one():
    same = load_config("configs/tiny.yaml")
    assert same.eval.judge is None and same.eval_judge() is same.judge
    own = load_config("configs/tiny.yaml", ["eval.judge.backend=rule", "eval.judge.rule.target=a"])
    assert own.eval_judge().rule.target == "a" and own.judge.rule.target == "e"


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("configs").glob("*.yaml")))
def test_every_shipped_config_loads(path):
    """A config the README or docs point at cannot rot: each loads, and each compare arm resolves."""
    from xrlhf.compare import arm_config, arms

    cfg = load_config(path)
    assert cfg.steps > 0
    for arm in arms(cfg):
        assert arm_config(cfg, arm, cfg.compare.seeds[0]).run_name.startswith(arm)
