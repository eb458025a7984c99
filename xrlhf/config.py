"""One typed config schema: YAML in, dotted overrides on top, clear errors before any model loads."""
from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)


class ConfigError(ValueError):
    """A config key, value or file is wrong; the message names which and what was expected."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Strict):
    enabled: bool = True
    r: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class ModelConfig(Strict):
    # "packaged" = gemma-3-270m from the PyPI GGUF package, "tiny" = random offline test model,
    # anything else = a hub id or a local directory.
    name: str = "packaged"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    load_in_4bit: bool = False
    cache_dir: str | None = None
    lora: LoraConfig = LoraConfig()
    gradient_checkpointing: bool = False
    # On CPU, every pass without gradient (sampling, the reference, PPO's old policy) runs each linear layer with
    # the product measured fastest for its shape and row count (xrlhf.policy.generation.tuned_linears), oneDNN-packed
    # weights among them: a second copy of those weights per process (about 1 GiB for gemma-3-270m in fp32).
    # False: the layers' own forward, less memory.
    tune_linears: bool = True

    @model_validator(mode="after")
    def _quantised_needs_lora(self) -> "ModelConfig":
        if self.load_in_4bit and not self.lora.enabled:
            raise ValueError("model.load_in_4bit=true needs model.lora.enabled=true: 4-bit weights are not trained, "
                             "so full fine-tuning would update nothing; train a LoRA adapter on them, or load "
                             "without 4-bit")
        return self


class DataConfig(Strict):
    source: Literal["bundled", "helpsteer2", "hh_rlhf", "file"] = "bundled"
    path: str | None = None  # source=file: the prompts; helpsteer2 / hh_rlhf: a local copy of the split (no hub)
    eval_source: Literal["bundled", "helpsteer2", "hh_rlhf", "file"] = "bundled"
    eval_path: str | None = None
    max_prompt_tokens: int = Field(256, gt=0)
    num_eval_prompts: int = Field(16, gt=0)
    shuffle: bool = True

    @model_validator(mode="after")
    def _paths(self) -> "DataConfig":
        if self.source == "file" and not self.path:
            raise ValueError("data.source=file needs data.path (a .jsonl or .parquet file)")
        if self.eval_source == "file" and not self.eval_path:
            raise ValueError("data.eval_source=file needs data.eval_path")
        return self


class RolloutConfig(Strict):
    backend: Literal["hf", "vllm"] = "hf"
    num_actors: int = Field(1, gt=0)
    prompts_per_step: int = Field(4, gt=0)
    samples_per_prompt: int = Field(2, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    # Texts that end a response as EOS does: the token that completes one is its last, the text before it is the
    # answer (e.g. ["\n\n", "User:"]: the blank line after an answer, or a base model writing the next turn).
    # Training samples and the held-out answers (validation, evaluation) stop alike. Empty: EOS and
    # max_new_tokens only.
    stop: list[str] = []
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    vllm_gpu_memory_utilization: float = Field(0.4, gt=0, le=1)
    # On CPU vLLM would size its KV cache from all of RAM: each rollout engine gets this much (GiB) instead, unless
    # VLLM_CPU_KVCACHE_SPACE is set. A rollout's sequences are short; several engines share one machine's memory.
    vllm_cpu_kv_cache_gib: float = Field(1.0, gt=0)
    # The vLLM engine's weights: None samples in model.dtype (behaviour log-probs computed as the learner computes
    # them); "bfloat16" halves a float32 model's engine memory (1.3 GiB less per gemma-270m engine on CPU) at the cost
    # of behaviour log-probs that differ from the learner's by bf16 rounding (the importance ratio absorbs it).
    vllm_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    # The Python interpreter the rollout actors run under (Ray's runtime_env py_executable), for a backend
    # installed in another environment: on CPU, vllm-cpu pins an older transformers than xrlhf's, so vLLM lives in
    # .venv-vllm (scripts/setup_vllm_env.sh, which installs the same Ray there). It must hold the driver's Ray and
    # Python versions and exist at this path on every node that runs a rollout actor. None: the driver's.
    python: str | None = None

    @field_validator("python")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """A relative path is read from the directory the run starts in (Ray needs an absolute one)."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else Path.cwd() / path)


class DimensionConfig(Strict):
    definition: str = Field(min_length=1)
    weight: float = Field(1.0, ge=0)
    direction: Literal["higher", "lower"] = "higher"
    min_score: int = 0
    max_score: int = 4
    # judge.mode=likelihood only: which signal scores this dimension (xrlhf/judge/likelihood.py): "fit" (the
    # response's mean log-probability given the question), "relevance" (what the question explains of it, quoted
    # words earning nothing, and whether it ends), "fluency" (its log-probability without the question, and whether
    # it ends), or a text measure (xrlhf/judge/measures.py): "length" (words against the question's band), "level"
    # (reading grade against a general reader's band). None: the default rubric's choice, "fit" for other names.
    signal: Literal["fit", "relevance", "fluency", "length", "level"] | None = None
    instruction: str | None = None  # likelihood mode: this dimension's own aspect instruction (None: the judge's)

    @model_validator(mode="after")
    def _range(self) -> "DimensionConfig":
        if self.max_score <= self.min_score:
            raise ValueError(f"max_score ({self.max_score}) must be greater than min_score ({self.min_score})")
        if self.max_score - self.min_score > 9:
            raise ValueError("score range must span at most 10 integers (single-token scores)")
        return self


TEMPLATE_NAMES = ("per_dimension", "rubric_first")  # the keys of xrlhf.judge.template.TEMPLATES
DEFAULT_DIMENSIONS: dict[str, dict[str, Any]] = {
    "helpfulness": {"definition": "How well the response does what the user asked, as a whole."},
    "correctness": {"definition": "Whether the facts, code and reasoning in the response are right and complete."},
    "coherence": {"definition": "Whether the response is clear, consistent and logically ordered."},
    # The level the question calls for, not expertise as such: a complexity that pays for jargon pays for obscurity.
    "complexity": {"definition": "Whether the expertise the response assumes fits the question (0 = far too childish "
                                 "or far too technical, 4 = the level the asker can follow)."},
    # The right amount of detail, not length: a length-paying verbosity makes the reward pay for padding.
    "verbosity": {"definition": "Whether the amount of detail fits what was asked (0 = far too little or far too "
                                "much, 4 = just what the question needs)."},
}


class HttpJudgeConfig(Strict):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "judge"
    api_key_env: str | None = None  # name of the environment variable holding the key; never the key itself
    # The served model's tokenizer (hub id, folder, "packaged"): truncation and prompt ending exactly as
    # the local judge, so HTTP and local scores agree. None: responses go uncut, prompts end at the cue.
    tokenizer: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, gt=0)  # retry waits are random in [0, backoff_s * 2^attempt], capped below
    max_backoff_s: float = Field(8.0, gt=0)
    # Before its first request the judge waits this long for the server to answer GET /models (vLLM refuses
    # connections while it loads the model, a minute or more), then checks that it serves `model`.
    ready_timeout_s: float = Field(300.0, ge=0)
    top_logprobs: int = Field(20, gt=0)  # vLLM's limit is its --max-logprobs, 20 by default
    concurrency: int = Field(8, gt=0)


class ServeConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    auth_token_env: str | None = None  # env var holding the bearer token that serve-judge requires
    num_replicas: int = Field(1, gt=0)


class RuleJudgeConfig(Strict):
    # A verifiable judge for tests: scores each dimension by whether the response contains `target`.
    target: str = "good"


# What each judge.backend can run (xrlhf/judge/__init__.py BACKENDS builds them): its default mode, then its modes.
# The local judge reads token log-probabilities itself, so it defaults to likelihood; a server may not echo them.
JUDGE_BACKENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hf": ("likelihood", ("likelihood", "expected", "generate")),
    "http": ("expected", ("likelihood", "expected", "generate")),
    "rule": ("expected", ("likelihood", "expected", "generate")),  # reads no model: every mode scores alike
}


class JudgeConfig(Strict):
    backend: Literal["hf", "http", "rule"] = "hf"
    model: str | None = None  # None: the policy's base model
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    load_in_4bit: bool = False
    tune_linears: bool = True  # as model.tune_linears, for the hf judge's passes (about 1 GiB more for gemma-270m)
    # likelihood: the response's token log-probabilities under an instruction describing excellent answers
    # (xrlhf/judge/likelihood.py); expected: the expected score digit after a rubric prompt; generate: a
    # generated digit. Chosen by bench/judge_quality.py (BENCHMARKS.md, Judge quality).
    # None: likelihood for the local judge (backend hf), expected for the others (likelihood over HTTP needs a
    # server that echoes prompt log-probs, as vLLM's completions API does); set in the resolved config.
    mode: Literal["likelihood", "expected", "generate"] | None = None
    # likelihood mode: the instruction (with its demonstrations) every sample is scored under: None or "default"
    # the training judge's, "evaluation" a second one with other wording and demonstrations (for eval.judge), or
    # the text of an instruction of your own (xrlhf/judge/likelihood.py INSTRUCTIONS)
    likelihood_instruction: str | None = None
    # Explicit checks for an empty answer, a repetition loop and the prompt copied back: the dimensions they
    # concern get their worst score, with the reason in the rationale (xrlhf/judge/guards.py).
    guards: bool = True
    dimensions: dict[str, DimensionConfig] = Field(
        default_factory=lambda: {k: DimensionConfig(**v) for k, v in DEFAULT_DIMENSIONS.items()})
    aggregation: Literal["mean", "weighted", "min"] = "weighted"
    missing_policy: Literal["drop", "reweight"] = "reweight"
    # None: the default template (rubric_first); a name from TEMPLATE_NAMES; or the template text itself.
    template: str | None = None
    # expected and generate modes: scored examples in the judge's cached instructions (few-shot, for base models;
    # xrlhf/judge/template.py DEMONSTRATIONS); a template of your own places them with {demonstrations}.
    demonstrations: bool = False
    rationale: bool = False
    max_response_tokens: int = Field(384, gt=0)
    generate_retries: int = Field(2, ge=0)  # mode=generate: sampled retries of an unparseable answer
    batch_size: int = Field(16, gt=0)
    num_actors: int = Field(1, gt=0)
    cache: bool = True
    max_consecutive_failed_steps: int = Field(3, gt=0)
    # Stop (with a checkpoint) once no judge answer has succeeded for this long, however few steps that took.
    max_seconds_without_success: float = Field(600.0, gt=0)
    http: HttpJudgeConfig = HttpJudgeConfig()
    serve: ServeConfig = ServeConfig()
    rule: RuleJudgeConfig = RuleJudgeConfig()

    @model_validator(mode="after")
    def _weights(self) -> "JudgeConfig":
        default, modes = JUDGE_BACKENDS[self.backend]
        if self.mode is None:
            object.__setattr__(self, "mode", default)
        if self.mode not in modes:
            raise ValueError(f"judge.backend={self.backend} runs judge.mode {' / '.join(modes)}, not {self.mode}")
        if not self.dimensions:
            raise ValueError("judge.dimensions must name at least one dimension")
        if self.aggregation == "weighted" and sum(d.weight for d in self.dimensions.values()) <= 0:
            raise ValueError("judge.dimensions weights sum to 0; at least one weight must be positive")
        if self.template is not None and self.template not in TEMPLATE_NAMES:
            missing = [p for p in ("{prompt}", "{response}", "{dimension}") if p not in self.template]
            if "{definition}" not in self.template and "{rubric}" not in self.template:
                missing.append("{definition} or {rubric}")
            if self.demonstrations and "{demonstrations}" not in self.template:
                missing.append("{demonstrations} (judge.demonstrations=true)")
            if missing:
                raise ValueError(f"judge.template lacks the placeholders {missing}")
        if self.demonstrations and self.mode == "likelihood":
            raise ValueError("judge.demonstrations=true applies to judge.mode=expected and generate; likelihood "
                             "mode's demonstrations are part of judge.likelihood_instruction")
        return self


class PPOConfig(Strict):
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    value_clip_range: float | None = Field(0.2, gt=0)
    epochs: int = Field(2, gt=0)
    minibatch_size: int = Field(4, gt=0)
    vf_coef: float = Field(0.5, ge=0)
    ent_coef: float = Field(0.0, ge=0)
    target_kl: float | None = Field(None, gt=0)
    whiten_advantages: bool = True
    critic: Literal["value_head", "separate"] = "value_head"


class ReinforceConfig(Strict):
    baseline: Literal["ema", "batch_mean", "loo"] = "loo"
    ema_decay: float = Field(0.9, ge=0, lt=1)
    # The baseline the first batch sees: first_batch its own mean return; zero 0, as the study's
    # MovingAverageBaseline (with ema_decay 0.99). Either way the first optimiser step sets the average to that
    # batch's mean and each later step folds its batch in with ema_decay (xrlhf/algorithms/reinforce.py).
    ema_init: Literal["first_batch", "zero"] = "first_batch"
    whiten_advantages: bool = False
    # Off-policy samples (algorithm.async_steps: 1) weigh each token's log-prob gradient by the truncated
    # importance ratio min(pi/mu, importance_cap) of the learner's policy pi to the sampling one mu.
    importance_cap: float = Field(1.0, gt=0)


# The learner registry: each algorithm a config may name and the class that runs it, "module:Class", imported only
# when a learner is built (xrlhf.learners.make_learner). Another algorithm is one new file in xrlhf/learners/ and
# one entry here (plus its own options in this file, if it has any). It lives in config, the bottom layer, so the
# schema checks a name against the registry itself, read at validation time, without importing the learners.
LEARNERS: dict[str, str] = {"ppo": "xrlhf.learners.ppo:PPOLearner",
                            "reinforce": "xrlhf.learners.reinforce:ReinforceLearner"}


def _known_algorithm(name: str) -> str:
    if name not in LEARNERS:
        *rest, last = LEARNERS
        raise ValueError(f"should be {', '.join(map(repr, rest))} or {last!r}")
    return name


AlgorithmName = Annotated[str, AfterValidator(_known_algorithm)]


class AlgorithmConfig(Strict):
    name: AlgorithmName = "reinforce"
    lr: float = Field(1e-4, gt=0)
    kl_coef: float = Field(0.05, ge=0)
    kl_estimator: Literal["k1", "k2", "abs", "k3"] = "k1"
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_nonfinite_in_a_row: int = Field(3, gt=0)
    # 1: gather step k+1 (sample, judge, reference) while the learner updates on step k; its samples come from
    # the weights one update behind (metrics: async/staleness). PPO's ratio is taken to those sampling
    # log-probs; REINFORCE weighs by truncated importance ratios (reinforce.importance_cap). 0: sequential.
    async_steps: int = Field(0, ge=0, le=1)
    # FAULT INJECTION for tests and drills only; leave empty. The learner's optimiser-step attempts
    # (0-based, counted from the learner's start) whose loss is replaced by NaN, to prove a NaN is skipped.
    debug_inject_nonfinite: list[int] = []
    ppo: PPOConfig = PPOConfig()
    reinforce: ReinforceConfig = ReinforceConfig()


class ActorResources(Strict):
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, gt=0)


class ResourcesConfig(Strict):
    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS or a local Ray
    num_cpus: int | None = Field(None, gt=0)  # for a local Ray only
    num_gpus: int | None = Field(None, ge=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = False
    max_restarts: int = Field(2, ge=0)
    max_step_retries: int = Field(2, ge=0)
    placement_timeout_s: float = Field(120.0, gt=0)
    # Allow a Ray head or Ray Serve (serve-judge) that listens beyond 127.0.0.1 while Ray's cluster authentication
    # is off (RAY_AUTH_MODE=disabled): for a trusted private network only; logged as a warning (xrlhf/exposure.py)
    allow_unauthenticated_cluster: bool = False
    # The reference pass runs in the learner with the LoRA adapter off (no second copy of the base; without LoRA,
    # a frozen copy of the base weights taken before the first update); false gives it an actor of its own, which
    # can sit on another GPU.
    colocate_reference: bool = True
    rollout: ActorResources = ActorResources(num_cpus=0.5)
    reference: ActorResources = ActorResources(num_cpus=0.5)
    judge: ActorResources = ActorResources(num_cpus=0.5)
    learner: ActorResources = ActorResources(num_cpus=0.5)


class LoggingConfig(Strict):
    wandb: bool = False
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "xrlhf"
    level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    # Folder for library warnings and progress bars (one file per process); None: RUN_DIR/logs, set by the
    # controller. At level DEBUG they stay on the terminal.
    library_logs: str | None = None


class CheckpointConfig(Strict):
    every: int = Field(5, gt=0)
    keep_last: int = Field(2, gt=0)


class EvalConfig(Strict):
    num_prompts: int = Field(8, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    temperature: float = Field(0.0, ge=0)  # 0 = greedy
    pairwise: bool = True
    # Validation curve during training: every this many steps (0 = off) the current policy answers the first
    # `validation_prompts` prompts of the eval split greedily (eval.max_new_tokens) through the rollout actor, and
    # the training judge scores them: val/reward and val/<dimension> in metrics.jsonl.
    every_steps: int = Field(0, ge=0)
    validation_prompts: int = Field(8, gt=0)
    # The judge of the held-out evaluation (xrlhf eval / compare): the same schema as `judge`, a judge of its own
    # (a policy that games its training judge shows it here). None: the training judge.
    judge: JudgeConfig | None = None


ARM_NAME = r"[A-Za-z0-9_]+"
ARM_FIXED = ("seed", "run_name", "output_dir", "compare")  # the compare sets these, the same for every arm


def flatten_overrides(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"algorithm": {"name": "ppo"}} and {"algorithm.name": "ppo"} both as {"algorithm.name": "ppo"}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_overrides(value, dotted + "."))
        else:
            out[dotted] = value
    return out


class CompareConfig(Strict):
    algorithms: list[AlgorithmName] = Field(default_factory=lambda: list(LEARNERS))  # every registered one
    # Named arms, each a map of config overrides on top of this config ({"algorithm.name": "ppo"} or nested);
    # run dirs are ARM-seedN. None: one arm per entry of `algorithms`, named after it.
    arms: dict[str, dict[str, Any]] | None = None
    seeds: list[int] = [0]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("compare.seeds must list at least one seed")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        import re

        if v is None:
            return v
        if not v:
            raise ValueError("compare.arms must name at least one arm (or leave it out and use compare.algorithms)")
        out = {}
        for name, overrides in v.items():
            if not re.fullmatch(ARM_NAME, name):
                raise ValueError(f"compare.arms: arm name {name!r} must be letters, digits and _ (it names run dirs "
                                 f"ARM-seedN)")
            flat = flatten_overrides(overrides or {})
            for key in flat:
                if key.split(".")[0] in ARM_FIXED:
                    raise ValueError(f"compare.arms.{name}.{key}: an arm cannot set {key.split('.')[0]}; the compare "
                                     f"gives every arm the same {', '.join(ARM_FIXED)}")
            out[name] = flat
        return out


class Config(Strict):
    run_name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    steps: int = Field(10, gt=0)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    judge: JudgeConfig = JudgeConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    resources: ResourcesConfig = ResourcesConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    compare: CompareConfig = CompareConfig()

    @model_validator(mode="after")
    def _cross(self) -> "Config":
        if self.algorithm.name == "reinforce" and self.algorithm.reinforce.baseline == "loo" \
                and self.rollout.samples_per_prompt < 2:
            raise ValueError("algorithm.reinforce.baseline=loo needs rollout.samples_per_prompt >= 2")
        if self.eval.judge is not None and list(self.eval.judge.dimensions) != list(self.judge.dimensions):
            raise ValueError(f"eval.judge.dimensions {list(self.eval.judge.dimensions)} must name the training "
                             f"judge's dimensions {list(self.judge.dimensions)}, in order, so scores compare "
                             f"dimension by dimension (weights and definitions may differ)")
        return self

    def eval_judge(self) -> JudgeConfig:
        """The judge of the held-out evaluation: eval.judge, or the training judge when that is None."""
        return self.eval.judge or self.judge


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        lines.append(f"  {key} = {shown}: {e['msg']}")
    return "invalid config:\n" + "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value`; the value is parsed as YAML so `0.05`, `true` and `[1, 2]` get their types."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from None
    return key.split("."), value


def _apply(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    node = tree
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts)}: {'.'.join(parts[:i + 1])} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def _check_key(parts: list[str], value: Any = None) -> None:
    """Fail on an override key the schema does not have, naming the whole dotted key."""
    if parts[:2] == ["compare", "arms"] and len(parts) > 3:
        try:  # compare.arms.ARM.<key>: an arm's override is itself a config key
            _check_key(parts[3:], value)
        except ConfigError as exc:
            raise ConfigError(f"compare.arms.{parts[2]}: {exc}") from None
        return
    node: Any = Config
    for i, part in enumerate(parts):
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                known = ", ".join(node.model_fields)
                raise ConfigError(f"unknown config key {'.'.join(parts)!r} (value {value!r}): "
                                  f"{part!r} is not one of: {known}")
            node = _model_in(node.model_fields[part].annotation)
        elif node is dict:
            node = DimensionConfig  # the only mapping section: judge.dimensions.<name>
        else:
            raise ConfigError(f"unknown config key {'.'.join(parts)!r}: {'.'.join(parts[:i])} is a value, not a section")


def _model_in(annotation: Any) -> Any:
    """The pydantic model class (or `dict`) inside an annotation such as `X | None` or `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if getattr(annotation, "__origin__", None) is dict:
        return dict
    for arg in typing.get_args(annotation):  # X | None
        if arg is not type(None) and _model_in(arg) is not None:
            return _model_in(arg)
    return None


def _yaml_problem(exc: Exception) -> str:
    """One line: where the YAML broke and why (PyYAML's own text spans several lines of context)."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML, apply dotted overrides, validate. Raises ConfigError naming the bad key and value."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {_yaml_problem(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(loaded).__name__}")
        raw = loaded or {}
    try:
        base = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    tree = base.model_dump(mode="python")
    for item in overrides:
        parts, value = parse_override(item)
        _check_key(parts, value)
        _apply(tree, parts, value)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    for name, arm in (cfg.compare.arms or {}).items():
        apply_overrides(cfg, arm, f"compare.arms.{name}.")  # a bad arm fails here, before anything trains
    return cfg


def apply_overrides(cfg: Config, overrides: dict[str, Any], where: str = "") -> Config:
    """A copy of cfg with dotted-key overrides ({"algorithm.name": "ppo"}) applied and re-validated; errors name
    each key after `where` (e.g. "compare.arms.ppo.")."""
    tree = copy.deepcopy(cfg.model_dump(mode="python"))
    for key, value in overrides.items():
        parts = key.split(".")
        try:
            _check_key(parts, value)
            _apply(tree, parts, value)
        except ConfigError as exc:
            raise ConfigError(f"{where}{key}: {exc}") from None
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{where.rstrip('.')}: " + _format_error(err)) from None


def dump_config(cfg: Config) -> str:
    """YAML of the resolved config (it holds env-var names for secrets, never secret values)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def with_overrides(cfg: Config, **sections: Any) -> Config:
    """A copy of cfg with top-level fields replaced, re-validated."""
    tree = copy.deepcopy(cfg.model_dump(mode="python"))
    tree.update(sections)
    return Config.model_validate(tree)
