"""The judge backend registry (xrlhf/judge/__init__.py BACKENDS): the one place that knows each judge.backend."""
import pytest

from xrlhf.config import JUDGE_BACKENDS, ConfigError, JudgeConfig, load_config
from xrlhf.judge import BACKENDS, backend, build_judge
from xrlhf.judge.hf import HFJudge
from xrlhf.judge.http import HttpJudge
from xrlhf.judge.rule import RuleJudge


def test_every_backend_the_config_accepts_is_built_through_the_registry():
    assert set(BACKENDS) == set(JUDGE_BACKENDS)
    built = {name: build_judge(JudgeConfig(backend=name, model="tiny" if name == "hf" else None), "tiny")
             for name in JUDGE_BACKENDS}
    assert isinstance(built["hf"], HFJudge) and isinstance(built["http"], HttpJudge)
    assert isinstance(built["rule"], RuleJudge)
    built["http"].close()
    for name, (default, modes) in JUDGE_BACKENDS.items():
        assert JudgeConfig(backend=name).mode == default and default in modes


def test_the_registry_answers_what_the_driver_and_report_ask():
    hf, http = JudgeConfig(), JudgeConfig(backend="http", http={"model": "judge-7b", "tokenizer": "packaged"})
    assert backend(hf).local_model(hf, "packaged") == "packaged" and backend(http).local_model(http, "x") is None
    assert backend(http).prepared(http, "policy") == ["packaged"]  # its tokenizer, converted before actors start
    assert backend(hf).label(hf, "packaged") == "hf packaged, mode likelihood"
    assert backend(http).label(http, "packaged") == "http judge-7b, mode expected"
    rule = JudgeConfig(backend="rule")
    assert backend(rule).label(rule, "p") == "rule (target 'good')" and backend(rule).prepared(rule, "p") == []


def test_a_backend_outside_the_registry_is_a_config_error():
    with pytest.raises(ConfigError, match="judge.backend"):
        load_config("configs/quickstart.yaml", ["judge.backend=vllm"])
