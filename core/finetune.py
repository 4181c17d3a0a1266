"""LLM fine-tuning: a local foundation model, the team's prompt/response data,
LoRA (peft) or full fine-tuning, Optuna tuning with cost in mind, BLEU/ROUGE on
a held-out split, a merged and an int8 export, registration and generation.

This module owns fine-tuning end to end. Base models come from a local folder
or the local Hugging Face cache only (`HF_HUB_OFFLINE=1` unless a user opts
in). Training is Pond's own loop over transformers models: on CUDA it runs in
bf16 where the GPU has it (else fp16 with loss scaling), with fused AdamW,
length-grouped batches and gradient checkpointing when the memory estimate is
tight; on a CPU it runs in fp32 with small batches. Under `accelerate launch`
(or torchrun) the same loop runs data parallel. Checkpoints are written to a
temporary folder and renamed into place, so a crash keeps the last good one.
torch, transformers, peft and optuna are imported only inside the functions
that need them: importing this module is cheap (the app's page does it).

A run folder holds `run.json` (the request, hardware and state: kept when a
run fails), `tokenizer/`, `generation_config.json`, `trials/<n>/` (each
trial's best checkpoint), `merged/` (the standalone export) and `result.json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InvalidInput, NotFound, PermissionDenied, PondError

if TYPE_CHECKING:
    import pandas as pd

    from core.auth import User
    from core.store import Workspace

CAUSAL = "causal_lm"
SEQ2SEQ = "seq2seq"
METHODS = ("lora", "full")
PROMPT_FORMATS = ("plain", "chat")
DEVICES = ("auto", "cpu", "cuda")
# What a version can hold: the trained weights as they are (a LoRA adapter, or
# full weights), the adapter merged into its base (standalone), or that merged
# model served with torch's dynamic int8 quantization on a CPU.
VARIANTS = ("weights", "merged", "int8")
MANIFEST = "pond_text_model.json"
RESULT_FILE = "result.json"
RUN_FILE = "run.json"
TASK = "text_generation"
FLAVOR = "transformers"
# Fewer rows than this cannot fill a training, a validation and a test split.
MIN_ROWS = 10
# Full fine-tuning keeps fp32 weights, gradients and two Adam moments per
# parameter (16 bytes each): past this size LoRA is the only sensible choice.
FULL_MAX_PARAMS = 3_000_000_000
SEPARATOR = "\n"
DEFAULT_LR = {"lora": 2e-4, "full": 5e-5}
# Optuna's learning-rate range per method (log scale).
LR_RANGE = {"lora": (1e-5, 5e-3), "full": (5e-6, 5e-4)}
LORA_RANKS = (4, 8, 16, 32)
LORA_ALPHAS = (8, 16, 32, 64)
# Generations that the int8 comparison runs (same rows for both variants).
QUANT_EVAL_ROWS = 64
LATENCY_PROMPTS = 8
SAMPLE_ROWS = 5
MAX_HISTORY = 600
MAX_SERVED_PROMPTS = 64
# bf16 dense peak of the GPUs Pond is benchmarked on, for model FLOPs utilisation.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
_WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = re.compile(
    r"^(tokenizer.*\.json|special_tokens_map\.json|vocab\.(json|txt)|merges\.txt|"
    r".*\.model|added_tokens\.json|chat_template\.(jinja|json))$"
)


class OutOfMemory(PondError):
    """The device ran out of memory; the message says what to reduce."""

    code = "out_of_memory"


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneConfig:
    """What a fine-tuning run is asked to do. None means "Pond picks" (see `resolved`).

    Attributes:
        method: "lora" (adapters via peft; the default) or "full" (small models).
        epochs: passes over the training split (an upper bound: early stopping).
        learning_rate: peak learning rate (default 2e-4 for LoRA, 5e-5 for full).
        batch_size: rows per step (default 4 on a CPU; on a GPU the largest that
            the memory estimate fits).
        max_length: tokens per example, prompt and response together (default the
            longest example, up to the model's context).
        n_trials: with a number, Optuna tunes learning rate, LoRA rank/alpha/
            dropout, epochs and batch size over that many trials.
        time_budget: seconds of training for the whole run (all trials).
        prompt_format: "plain" (prompt, newline, response) or "chat" (the
            tokenizer's chat template).
        device: "auto" (CUDA when there is one), "cpu" or "cuda".
        gradient_checkpointing: None turns it on when memory is tight.
        compare_int8: after training, measure a dynamically int8-quantized CPU
            variant against the merged fp32 model (quality and latency).
        allow_hub: let transformers download a base model missing from the cache.
    """

    method: str = "lora"
    epochs: int = 3
    learning_rate: float | None = None
    batch_size: int | None = None
    max_length: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    n_trials: int | None = None
    time_budget: float | None = None
    seed: int = 0
    prompt_format: str = "plain"
    device: str = "auto"
    gradient_checkpointing: bool | None = None
    evals_per_epoch: int = 2
    patience: int = 3
    max_new_tokens: int = 64
    compare_int8: bool = True
    allow_hub: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _param_error(name: str, rule: str, value: Any) -> InvalidInput:
    return InvalidInput(
        f"The '{name}' parameter of finetune must be {rule}. Got {value!r} instead."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: FinetuneConfig) -> FinetuneConfig:
    """Check every setting before any work starts.

    Returns:
        The same config.

    Raises:
        InvalidInput: a setting out of range, in the form "The 'epochs'
            parameter of finetune must be an int >= 1. Got 0 instead."
    """
    if config.method not in METHODS:
        raise _param_error("method", f"one of {', '.join(METHODS)}", config.method)
    if config.prompt_format not in PROMPT_FORMATS:
        raise _param_error("prompt_format", f"one of {', '.join(PROMPT_FORMATS)}",
                           config.prompt_format)
    if config.device not in DEVICES:
        raise _param_error("device", f"one of {', '.join(DEVICES)}", config.device)
    for name, low in (("epochs", 1), ("lora_r", 1), ("lora_alpha", 1), ("evals_per_epoch", 1),
                      ("patience", 1), ("max_new_tokens", 1), ("seed", 0)):
        value = getattr(config, name)
        if not _is_int(value) or value < low:
            raise _param_error(name, f"an int >= {low}", value)
    for name, low in (("batch_size", 1), ("max_length", 8), ("n_trials", 1)):
        value = getattr(config, name)
        if value is not None and (not _is_int(value) or value < low):
            raise _param_error(name, f"an int >= {low} or None", value)
    lr = config.learning_rate
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float)
                           or not 0 < lr < 1):
        raise _param_error("learning_rate", "a float in (0, 1) or None", lr)
    if isinstance(config.lora_dropout, bool) or not isinstance(config.lora_dropout, int | float) \
            or not 0 <= config.lora_dropout < 1:
        raise _param_error("lora_dropout", "a float in [0, 1)", config.lora_dropout)
    budget = config.time_budget
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)
                               or not math.isfinite(budget) or budget <= 0):
        raise _param_error("time_budget", "a number of seconds > 0 or None", budget)
    return config


# --- base models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """A foundation model on local disk, described from its files (no weights loaded).

    Attributes:
        reference: what the user named (a folder or a hub name).
        path: the folder `from_pretrained` reads.
        kind: "causal_lm" or "seq2seq".
        n_params: parameters, from the safetensors headers (0 when unknown).
        context_length: the longest input the model takes, None when unbounded
            (relative positions, as in T5).
        sha256: over its config and weight files, recorded with every version.
    """

    reference: str
    path: Path
    kind: str
    architecture: str
    model_type: str
    n_params: int
    context_length: int | None
    hidden_size: int
    n_layers: int
    vocab_size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


@dataclass(frozen=True)
class BaseModelChoice:
    """A base model found on this machine, for the page's picker."""

    label: str
    path: str
    source: str


_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_hash_lock = threading.Lock()


def _weight_files(folder: Path) -> list[Path]:
    found: dict[str, Path] = {}
    for pattern in _WEIGHT_GLOBS:
        for path in folder.glob(pattern):
            found[path.name] = path
    return [found[k] for k in sorted(found)]


def model_sha256(folder: str | os.PathLike[str]) -> str:
    """One sha256 over a model folder's config and weight files (names and contents).

    Cached per process by file size and modification time, since weights can
    be many gigabytes.
    """
    root = Path(folder)
    files = [p for p in [root / "config.json", *_weight_files(root)] if p.is_file()]
    key = (str(root.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                      for p in files))
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        digest.update(f"{path.name}\0{inner.hexdigest()}\n".encode())
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def _safetensors_params(path: Path) -> int:
    """Parameters in a safetensors file, read from its JSON header alone."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size < 100_000_000:
            return 0
        header = json.loads(fh.read(size))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        total += math.prod(entry.get("shape", []))
    return total


def _count_params(folder: Path) -> int:
    return sum(_safetensors_params(p) for p in folder.glob("*.safetensors"))


def _config_int(config: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if _is_int(value) and value > 0:
            return value
    return None


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def _place_model_message(reference: str) -> str:
    return (
        f"base model {reference!r} is neither a model folder on this machine nor in the local "
        f"Hugging Face cache ({_hub_cache()}); Pond does not download models unless asked. "
        f"Place it first: on a machine with internet run `hf download {reference}` (or "
        "`model.save_pretrained(FOLDER)` and `tokenizer.save_pretrained(FOLDER)`), copy the "
        "folder here and pass its path; or allow the download with --allow-hub"
    )


def _hub_snapshot(reference: str, allow_hub: bool) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?", reference):
        raise InvalidInput(
            f"base model {reference!r} does not exist: it is not a folder on this machine, nor "
            "a model name like 'org/name'"
        )
    _hf_environment(allow_hub)
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(reference, local_files_only=not allow_hub)
    except Exception as exc:  # noqa: BLE001 - offline misses raise several error types
        if allow_hub:
            raise InvalidInput(
                f"base model {reference!r} could not be downloaded: {exc}"
            ) from None
        raise InvalidInput(_place_model_message(reference)) from None
    return Path(path)


def resolve_base_model(
    reference: str | os.PathLike[str], *, allow_hub: bool = False, with_hash: bool = True
) -> BaseModel:
    """Describe a base model from its folder (or its local hub-cache snapshot).

    Args:
        reference: a folder written by `save_pretrained`, or a hub name such as
            "gpt2" that is already in the local Hugging Face cache.
        allow_hub: download a hub name missing from the cache.
        with_hash: hash the weights (seconds to minutes for large models); without
            it `sha256` is empty, which is enough to plan a run.

    Returns:
        The model's kind, size, context length and content hash.

    Raises:
        InvalidInput: the path is not a model (no config.json, no weights, an
            architecture that is neither a causal LM nor a seq2seq model), or a
            hub name that is not cached; the message says how to place it.
    """
    text = str(reference).strip()
    if not text:
        raise InvalidInput("name a base model: a folder with config.json and weights")
    path = Path(text).expanduser()
    if path.is_file():
        raise InvalidInput(
            f"base model {text!r} is a file; pass the folder that holds config.json, the "
            "weights (*.safetensors) and the tokenizer files"
        )
    if not path.is_dir():
        path = _hub_snapshot(text, allow_hub)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InvalidInput(
            f"{text!r} is a folder but not a Hugging Face model: it has no config.json. Pass "
            "the folder that `save_pretrained` wrote (config.json, model.safetensors, "
            "tokenizer files)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"the config.json of base model {text!r} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"the config.json of base model {text!r} is not a JSON object")
    weights = _weight_files(path)
    if not weights:
        raise InvalidInput(
            f"base model {text!r} has a config.json but no weights (model.safetensors); copy "
            "the whole folder that `save_pretrained` wrote"
        )
    architectures = config.get("architectures") or []
    architecture = str(architectures[0]) if architectures else str(config.get("model_type", "?"))
    is_seq2seq = bool(config.get("is_encoder_decoder")) or architecture.endswith(
        "ForConditionalGeneration") and "Llava" not in architecture
    if is_seq2seq:
        kind = SEQ2SEQ
    elif architecture.endswith(("ForCausalLM", "LMHeadModel")) or not architectures:
        kind = CAUSAL
    else:
        raise InvalidInput(
            f"base model {text!r} is a {architecture}, which does not generate text; pick a "
            "causal language model (…ForCausalLM, GPT-2…) or a seq2seq model (T5, BART)"
        )
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model") or 0
    layers = _config_int(config, "num_hidden_layers", "n_layer", "num_layers") or 0
    if kind == SEQ2SEQ:
        layers += _config_int(config, "num_decoder_layers", "decoder_layers") or layers
    context = _config_int(config, "max_position_embeddings", "n_positions", "n_ctx")
    if config.get("model_type") in ("t5", "mt5", "umt5", "longt5"):
        context = None  # relative position buckets: no hard limit
    return BaseModel(
        reference=text,
        path=path.resolve(),
        kind=kind,
        architecture=architecture,
        model_type=str(config.get("model_type", "")),
        n_params=_count_params(path),
        context_length=context,
        hidden_size=hidden,
        n_layers=layers,
        vocab_size=_config_int(config, "vocab_size") or 0,
        sha256=model_sha256(path) if with_hash else "",
    )


def list_base_models(ws: Workspace | None = None) -> list[BaseModelChoice]:
    """Models on this machine: folders under `POND_HOME/models/` and the hub cache.

    Reads folder names and config files only, so a page can call it on load.
    """
    found: list[BaseModelChoice] = []
    if ws is not None:
        root = ws.home / "models"
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / "config.json").is_file():
                    found.append(BaseModelChoice(folder.name, str(folder), "workspace"))
    cache = _hub_cache()
    if cache.is_dir():
        for repo in sorted(cache.glob("models--*")):
            snapshots = sorted((repo / "snapshots").glob("*/config.json"),
                               key=lambda p: p.stat().st_mtime)
            if snapshots:
                name = repo.name.removeprefix("models--").replace("--", "/")
                found.append(BaseModelChoice(name, str(snapshots[-1].parent), "hub cache"))
    return found


# --- hardware and memory ------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    """What a run will train on.

    Attributes:
        device: "cuda" or "cpu".
        name: the GPU's name, or the CPU's.
        memory_total_bytes / memory_free_bytes: of the GPU (or of the machine).
        bf16: whether the GPU computes in bf16 (None on a CPU).
    """

    device: str
    name: str
    gpu_count: int
    memory_total_bytes: int
    memory_free_bytes: int | None
    bf16: bool | None
    cpu_cores: int

    def describe(self) -> str:
        gib = self.memory_total_bytes / 2**30
        if self.device == "cuda":
            count = f"{self.gpu_count}× " if self.gpu_count > 1 else ""
            dtype = "bf16" if self.bf16 else "fp16"
            return f"{count}{self.name} ({gib:.0f} GiB, {dtype})"
        return f"CPU: {self.name}, {self.cpu_cores} cores, {gib:.0f} GiB RAM (fp32)"

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), description=self.describe())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


def _machine_memory() -> tuple[int, int | None]:
    try:
        info = dict(
            (line.split(":")[0], int(line.split()[1]) * 1024)
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.split()[-1] == "kB"
        )
        return info.get("MemTotal", 0), info.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        return 0, None


def _nvidia_smi() -> list[dict[str, Any]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free,compute_cap",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            major = int(parts[3].split(".")[0])
            gpus.append({"name": parts[0], "total": int(float(parts[1])) * 2**20,
                         "free": int(float(parts[2])) * 2**20, "bf16": major >= 8})
        except ValueError:
            continue
    return gpus


def hardware_report(device: str = "auto") -> Hardware:
    """The GPU (name, memory, bf16) or the CPU a run will use.

    Uses torch when this process has imported it (the worker), else
    `nvidia-smi`, so the app can show it without loading torch.

    Raises:
        InvalidInput: `device="cuda"` on a machine without a usable GPU.
    """
    cores = os.cpu_count() or 1
    gpus: list[dict[str, Any]] = []
    if device != "cpu":
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(i)
                    gpus.append({"name": torch.cuda.get_device_name(i), "total": total,
                                 "free": free, "bf16": torch.cuda.is_bf16_supported()})
        else:
            gpus = _nvidia_smi()
    if gpus:
        first = gpus[0]
        return Hardware("cuda", first["name"], len(gpus), first["total"], first["free"],
                        first["bf16"], cores)
    if device == "cuda":
        raise InvalidInput(
            "device 'cuda' was asked for but this machine has no usable NVIDIA GPU (no driver, "
            "or a CPU build of torch); use --device auto or cpu"
        )
    total, free = _machine_memory()
    return Hardware("cpu", _cpu_name(), 0, total, free, None, cores)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training needs, roughly: weights, gradients, Adam state, activations.

    Attributes:
        fits: whether it fits the device's free memory (None when unknown).
        gradient_checkpointing: whether the estimate assumes it.
    """

    weights_bytes: int
    trainable_params: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    total_bytes: int
    available_bytes: int | None
    fits: bool | None
    gradient_checkpointing: bool
    batch_size: int
    max_length: int

    def describe(self) -> str:
        need = self.total_bytes / 2**30
        have = "" if self.available_bytes is None else \
            f" of {self.available_bytes / 2**30:.1f} GiB free"
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return (f"about {need:.2f} GiB{have} (batch {self.batch_size} × {self.max_length} "
                f"tokens{ckpt})")

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), description=self.describe())


def _lora_trainable(base: BaseModel, r: int) -> int:
    # peft's default targets are two projections per attention block (q and v,
    # or GPT-2's fused c_attn): about 2 · r · (in + out) parameters per layer.
    return max(1, 4 * r * max(base.hidden_size, 1) * max(base.n_layers, 1))


def estimate_memory(
    base: BaseModel,
    hardware: Hardware,
    *,
    method: str,
    batch_size: int,
    max_length: int,
    lora_r: int = 8,
    gradient_checkpointing: bool = False,
) -> MemoryEstimate:
    """A rough estimate of the memory a training needs on `hardware`.

    Weights are bf16/fp16 for a LoRA base on a GPU, fp32 otherwise; trainable
    parameters carry fp32 gradients and two fp32 Adam moments; activations
    follow Korthikanti et al. (about 34 · tokens · hidden bytes per layer in
    16-bit, or only each layer's input with checkpointing) plus fp32 logits.

    Returns:
        The estimate, with whether it fits the free memory.
    """
    n = max(base.n_params, 1)
    half = hardware.device == "cuda"
    bytes_per_weight = 2 if (half and method == "lora") else 4
    trainable = _lora_trainable(base, lora_r) if method == "lora" else n
    weights = n * bytes_per_weight + (trainable * 4 if method == "lora" else 0)
    gradients = trainable * 4
    optimizer = trainable * 8
    tokens = batch_size * max_length
    act_width = 2 if half else 4
    per_layer = (2 * act_width if gradient_checkpointing else 17 * act_width)
    activations = tokens * max(base.hidden_size, 1) * max(base.n_layers, 1) * per_layer
    activations += tokens * max(base.vocab_size, 1) * 4 * 2  # fp32 logits and their gradient
    overhead = 512 * 2**20 if half else 0  # CUDA context and allocator slack
    total = int((weights + gradients + optimizer + activations) * 1.1) + overhead
    available = hardware.memory_free_bytes
    return MemoryEstimate(
        weights_bytes=weights, trainable_params=trainable, gradients_bytes=gradients,
        optimizer_bytes=optimizer, activations_bytes=activations, total_bytes=total,
        available_bytes=available, fits=None if available is None else total <= available * 0.9,
        gradient_checkpointing=gradient_checkpointing, batch_size=batch_size,
        max_length=max_length,
    )


def _choose_batch(
    base: BaseModel, hardware: Hardware, config: FinetuneConfig, max_length: int, train_rows: int
) -> tuple[int, bool, MemoryEstimate]:
    """Batch size and gradient checkpointing: the user's, else the largest that fits."""
    cap = max(1, train_rows)
    wanted_ckpt = config.gradient_checkpointing
    if config.batch_size is not None:
        batch = min(config.batch_size, cap)
        ckpt = bool(wanted_ckpt)
        estimate = estimate_memory(base, hardware, method=config.method, batch_size=batch,
                                   max_length=max_length, lora_r=config.lora_r,
                                   gradient_checkpointing=ckpt)
        if wanted_ckpt is None and estimate.fits is False:
            ckpt = True
            estimate = estimate_memory(base, hardware, method=config.method, batch_size=batch,
                                       max_length=max_length, lora_r=config.lora_r,
                                       gradient_checkpointing=True)
        return batch, ckpt, estimate
    if hardware.device != "cuda":
        batch = min(4, cap)
        return batch, bool(wanted_ckpt), estimate_memory(
            base, hardware, method=config.method, batch_size=batch, max_length=max_length,
            lora_r=config.lora_r, gradient_checkpointing=bool(wanted_ckpt))
    options = [False, True] if wanted_ckpt is None else [bool(wanted_ckpt)]
    estimate = None
    for ckpt in options:
        for batch in (32, 16, 8, 4, 2, 1):
            batch = min(batch, cap)
            estimate = estimate_memory(base, hardware, method=config.method, batch_size=batch,
                                       max_length=max_length, lora_r=config.lora_r,
                                       gradient_checkpointing=ckpt)
            # Leave room: the estimate is rough and other processes share the GPU.
            if estimate.available_bytes is None or \
                    estimate.total_bytes <= 0.7 * estimate.available_bytes:
                return batch, ckpt, estimate
    assert estimate is not None
    return 1, options[-1], estimate


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRows:
    """Prompt/response pairs that can be trained on, with the rows left out and why."""

    prompts: tuple[str, ...]
    responses: tuple[str, ...]
    rows: tuple[int, ...]
    dropped: dict[str, tuple[int, ...]]
    warnings: tuple[str, ...]


def _rows_text(rows: Sequence[int], shown: int = 5) -> str:
    text = ", ".join(str(r) for r in rows[:shown])
    return text + (f" and {len(rows) - shown} more" if len(rows) > shown else "")


def prepare_rows(
    frame: pd.DataFrame, prompt_col: str, response_col: str, *, source: str = "the data"
) -> PreparedRows:
    """Check and collect the prompt/response pairs of a table.

    Rows with a missing (null) or empty prompt or response are left out and
    reported; anything that is not text is refused.

    Args:
        source: how messages name the data ("dataset qa:2").

    Returns:
        The usable pairs and their row numbers.

    Raises:
        InvalidInput: a missing column, the same column twice, non-text values,
            or fewer than `MIN_ROWS` usable rows.
    """
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    for role, col in (("prompt", prompt_col), ("response", response_col)):
        if col not in columns:
            raise InvalidInput(
                f"{source} has no {role} column {col!r}; its columns are "
                f"{', '.join(repr(c) for c in columns[:30])}"
            )
    if prompt_col == response_col:
        raise InvalidInput(
            f"the prompt and response columns are both {prompt_col!r}; pick two columns"
        )
    if len(frame) < MIN_ROWS:
        raise InvalidInput(
            f"{source} has {len(frame)} rows; fine-tuning needs at least {MIN_ROWS} "
            "prompt/response pairs (some are held out to validate and to test), and "
            "hundreds to learn anything useful"
        )
    dropped: dict[str, list[int]] = {"missing": [], "empty": []}
    prompts: list[str] = []
    responses: list[str] = []
    kept: list[int] = []
    for i, (p, r) in enumerate(zip(frame[prompt_col].tolist(), frame[response_col].tolist(),
                                   strict=True)):
        for col, value in ((prompt_col, p), (response_col, r)):
            if value is not None and not isinstance(value, str) and not pd.isna(value):
                raise InvalidInput(
                    f"column {col!r} of {source} must hold text; row {i} holds "
                    f"{type(value).__name__} {value!r}. Convert the column to text first"
                )
        if p is None or r is None or pd.isna(p) or pd.isna(r):
            dropped["missing"].append(i)
        elif not p.strip() or not r.strip():
            dropped["empty"].append(i)
        else:
            prompts.append(p)
            responses.append(r)
            kept.append(i)
    notes = []
    for why, rows in dropped.items():
        if rows:
            notes.append(f"{len(rows)} rows with {'a null' if why == 'missing' else 'an empty'} "
                         f"prompt or response were left out (rows {_rows_text(rows)})")
    if len(kept) < MIN_ROWS:
        raise InvalidInput(
            f"{source} has only {len(kept)} usable prompt/response pairs"
            + (f" ({'; '.join(notes)})" if notes else "")
            + f"; fine-tuning needs at least {MIN_ROWS}"
        )
    return PreparedRows(tuple(prompts), tuple(responses), tuple(kept),
                        {k: tuple(v) for k, v in dropped.items()}, tuple(notes))


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt becomes model input, identically in training and in generation.

    Attributes:
        style: "plain" (the prompt, a newline, then the response and the end-of-text
            token) or "chat" (the tokenizer's chat template, one user turn).
        kind: "causal_lm" or "seq2seq" (which only sees the prompt as input).
    """

    style: str
    kind: str

    def prompt_text(self, tokenizer: Any, prompt: str) -> str:
        if self.kind == SEQ2SEQ:
            return prompt
        if self.style == "chat":
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt + SEPARATOR

    def prompt_ids(self, tokenizer: Any, prompt: str) -> list[int]:
        # A chat template writes its own BOS; plain prompts get the tokenizer's.
        return list(tokenizer(self.prompt_text(tokenizer, prompt),
                              add_special_tokens=self.style != "chat")["input_ids"])

    def response_ids(self, tokenizer: Any, prompt: str, response: str) -> list[int]:
        if self.kind == SEQ2SEQ:
            return list(tokenizer(text_target=response)["input_ids"])
        if self.style == "chat":
            start = self.prompt_text(tokenizer, prompt)
            full = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=False,
            )
            tail = full[len(start):] if full.startswith(start) else response
            ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
            if not full.startswith(start) and tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            return ids
        return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [
            tokenizer.eos_token_id
        ]


@dataclass(frozen=True)
class Example:
    """One tokenized pair; `labels` are -100 where no loss is taken (the prompt)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    truncated: bool


def _fit(prompt: list[int], response: list[int], kind: str, max_length: int,
         eos_id: int | None) -> tuple[list[int], list[int], bool]:
    if kind == SEQ2SEQ:
        truncated = len(prompt) > max_length or len(response) > max_length
        if len(prompt) > max_length:
            prompt = prompt[: max_length - 1] + ([eos_id] if eos_id is not None else prompt[-1:])
        if len(response) > max_length:
            response = response[: max_length - 1] + (
                [eos_id] if eos_id is not None else response[-1:])
        return prompt, response, truncated
    if len(prompt) + len(response) <= max_length:
        return prompt + response, [-100] * len(prompt) + response, False
    # Keep the end of the prompt (nearest the answer) and the start of the response.
    keep_response = max(1, max_length - min(len(prompt), max_length // 2))
    response = response[:keep_response]
    prompt = prompt[-(max_length - len(response)):] if max_length > len(response) else []
    return prompt + response, [-100] * len(prompt) + response, True


def encode_examples(
    tokenizer: Any,
    prompt_format: PromptFormat,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
) -> list[Example]:
    """Tokenize pairs for training: the loss is taken on the response tokens only.

    Pairs longer than `max_length` are cut: the prompt from its start (the end,
    nearest the answer, is kept) and the response at its end.
    """
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        p = prompt_format.prompt_ids(tokenizer, prompt)
        r = prompt_format.response_ids(tokenizer, prompt, response)
        ids, labels, cut = _fit(p, r, prompt_format.kind, max_length, tokenizer.eos_token_id)
        out.append(Example(tuple(ids), tuple(labels), cut))
    return out


def _raw_length(tokenizer: Any, fmt: PromptFormat, prompt: str, response: str) -> int:
    p = len(fmt.prompt_ids(tokenizer, prompt))
    r = len(fmt.response_ids(tokenizer, prompt, response))
    return max(p, r) if fmt.kind == SEQ2SEQ else p + r


def split_rows(n: int, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Train, validation and test positions: 10% each held out (at least one), seeded."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(n * 0.1))
    n_val = max(1, round(n * 0.1))
    return (sorted(order[n_test + n_val:]), sorted(order[n_test:n_test + n_val]),
            sorted(order[:n_test]))


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Batches of similar lengths in a random order, so little of each batch is padding.

    As transformers' LengthGroupedSampler: shuffle, sort within mega-batches of
    50 batches, shuffle the batches; the batch holding the longest example
    goes first so an out-of-memory error shows at the first step.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def collate(examples: Sequence[Example], kind: str, pad_id: int, pad_multiple: int = 1) -> dict:
    """Pad a batch: input ids with the pad token, labels with -100 (no loss).

    Returns:
        input_ids, attention_mask and labels as torch tensors.
    """
    import torch

    def width(n: int) -> int:
        return n if pad_multiple <= 1 else -(-n // pad_multiple) * pad_multiple

    n_in = width(max(len(e.input_ids) for e in examples))
    ids = torch.full((len(examples), n_in), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n_in), dtype=torch.long)
    n_out = n_in if kind == CAUSAL else width(max(len(e.labels) for e in examples))
    labels = torch.full((len(examples), n_out), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _tokens_in(batch: Mapping[str, Any], kind: str) -> int:
    """Tokens a step processes (padding excluded): inputs, plus targets for seq2seq."""
    count = int(batch["attention_mask"].sum())
    if kind == SEQ2SEQ:
        count += int((batch["labels"] != -100).sum())
    return count


def _loss_tokens(batch: Mapping[str, Any], kind: str) -> int:
    labels = batch["labels"]
    # Causal LMs predict token t+1 from t, so the first label never counts.
    return int((labels[:, 1:] != -100).sum()) if kind == CAUSAL else int((labels != -100).sum())


# --- loading models ------------------------------------------------------------------------


def _hf_environment(allow_hub: bool = False) -> None:
    """Offline unless asked (huggingface_hub reads these once, at import)."""
    if allow_hub:
        os.environ["HF_HUB_OFFLINE"] = "0"
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _transformers(allow_hub: bool = False) -> Any:
    _hf_environment(allow_hub)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(base: BaseModel | Path | str, *, kind: str = CAUSAL) -> tuple[Any, list[str]]:
    """The base model's tokenizer, with a pad token.

    A tokenizer without one pads with its end-of-text token (padding is masked
    out of the loss and the attention, so the choice does not change training).

    Returns:
        The tokenizer and warnings about what was changed.

    Raises:
        InvalidInput: no tokenizer files, or neither a pad nor an end-of-text token.
    """
    path = base.path if isinstance(base, BaseModel) else Path(base)
    name = base.reference if isinstance(base, BaseModel) else str(path)
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - missing files surface as many error types
        raise InvalidInput(
            f"base model {name!r} has no usable tokenizer ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); copy the tokenizer files "
            "(tokenizer.json, tokenizer_config.json) that `tokenizer.save_pretrained` writes "
            "into the model folder"
        ) from None
    notes: list[str] = []
    if tokenizer.eos_token_id is None and kind == CAUSAL:
        raise InvalidInput(
            f"the tokenizer of base model {name!r} has no end-of-text (eos) token, so a "
            "fine-tuned model could not learn where an answer ends; set one with "
            "`tokenizer.eos_token = ...` and `tokenizer.save_pretrained(FOLDER)`"
        )
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise InvalidInput(
                f"the tokenizer of base model {name!r} has neither a pad nor an eos token; "
                "add one with `tokenizer.add_special_tokens({'pad_token': '<pad>'})` and "
                "save it"
            )
        tokenizer.pad_token = tokenizer.eos_token
        notes.append(f"the tokenizer has no pad token; its end-of-text token "
                     f"{tokenizer.eos_token!r} pads batches (masked out of the loss)")
    return tokenizer, notes


def _model_class(kind: str) -> Any:
    transformers = _transformers()
    return (transformers.AutoModelForSeq2SeqLM if kind == SEQ2SEQ
            else transformers.AutoModelForCausalLM)


def _load_weights(path: Path, kind: str, dtype: Any, name: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _model_class(kind).from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"base model {name!r} could not be loaded: {first}") from None


@dataclass(frozen=True)
class Precision:
    """How a run computes: the base weights' dtype, autocast and loss scaling."""

    device: str
    weights: str
    autocast: str | None
    loss_scaling: bool

    def describe(self) -> str:
        if self.autocast is None:
            return f"{self.weights} on {self.device}"
        scaled = " with loss scaling" if self.loss_scaling else ""
        return f"{self.autocast} autocast{scaled}, {self.weights} weights, on {self.device}"


def choose_precision(hardware: Hardware, method: str) -> Precision:
    """bf16 on GPUs that have it, else fp16 with loss scaling; fp32 on a CPU.

    A LoRA base is stored in 16 bits (it is frozen); full fine-tuning keeps fp32
    master weights under autocast, since Adam updates vanish in 16 bits.
    """
    if hardware.device != "cuda":
        return Precision("cpu", "float32", None, False)
    half = "bfloat16" if hardware.bf16 else "float16"
    return Precision("cuda", half if method == "lora" else "float32", half, half == "float16")


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _lora_config(base_kind: str, model: Any, r: int, alpha: int, dropout: float) -> Any:
    import peft

    task = peft.TaskType.SEQ_2_SEQ_LM if base_kind == SEQ2SEQ else peft.TaskType.CAUSAL_LM
    known = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    targets = None if getattr(model.config, "model_type", None) in known else "all-linear"
    return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type=task,
                           target_modules=targets)


def _build_model(base: BaseModel, settings: _Settings, device: Any) -> Any:
    model = _load_weights(base.path, base.kind, _dtype(settings.precision.weights),
                          base.reference)
    model.config.use_cache = False
    if settings.method == "lora":
        import peft

        for p in model.parameters():
            p.requires_grad_(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = peft.get_peft_model(
                model, _lora_config(base.kind, model, settings.lora_r, settings.lora_alpha,
                                    settings.lora_dropout))
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if settings.method == "lora":
            model.enable_input_require_grads()
    model.to(device)
    model.train()
    return model


# --- the training loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """One trial's resolved settings."""

    method: str
    learning_rate: float
    epochs: int
    batch_size: int
    max_length: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    gradient_checkpointing: bool
    precision: Precision
    evals_per_epoch: int
    patience: int
    seed: int

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method, "learning_rate": self.learning_rate, "epochs": self.epochs,
            "batch_size": self.batch_size, "max_length": self.max_length,
            "gradient_checkpointing": self.gradient_checkpointing,
        }
        if self.method == "lora":
            out.update(lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                       lora_dropout=self.lora_dropout)
        return out


@dataclass(frozen=True)
class HistoryPoint:
    """Losses at one moment of a trial (train loss averaged since the last point)."""

    trial: int
    step: int
    epoch: float
    tokens: int
    elapsed_s: float
    train_loss: float | None
    val_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrialSummary:
    """One trial: its settings, quality (best validation loss) and cost.

    Attributes:
        state: "complete", "pruned" (Optuna stopped it: worse than the others
            at the same point), "failed" (out of memory) or "stopped" (budget or
            stop request, best checkpoint kept).
        gpu_seconds: training seconds × GPUs (None on a CPU).
        peak_memory_bytes: peak GPU memory allocated (on a CPU: the process's
            peak resident memory).
    """

    number: int
    state: str
    params: dict[str, Any]
    initial_val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    steps: int
    epochs_done: float
    train_tokens: int
    seconds: float
    gpu_seconds: float | None
    tokens_per_s: float
    peak_memory_bytes: int | None
    stopped_by: str
    checkpoint: str | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running fine-tuning, for the progress file and the page.

    `phase` is "preparing", "training", "evaluating", "exporting" or "done".
    """

    phase: str
    trials_done: int
    trials_pruned: int
    trials_target: int | None
    trial: int | None
    epoch: float
    step: int
    total_steps: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    tokens_per_s: float | None
    elapsed_s: float
    budget_s: float | None
    history: tuple[HistoryPoint, ...]
    trials: tuple[TrialSummary, ...]
    hardware: dict[str, Any]
    message: str = ""

    @property
    def fraction(self) -> float:
        """How far along, 0..1, by time or by steps and trials, whichever is further."""
        if self.phase == "done":
            return 1.0
        parts = [0.0]
        if self.budget_s:
            parts.append(self.elapsed_s / self.budget_s)
        within = self.step / self.total_steps if self.total_steps else 0.0
        target = self.trials_target or 1
        parts.append((self.trials_done + within) / target)
        return float(min(0.99, max(parts)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fraction"] = round(self.fraction, 4)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out


ProgressCallback = Callable[[Progress], None]
StopSignal = Callable[[], bool]


class _Reporter:
    """Builds progress snapshots; only the main process of a distributed run reports."""

    def __init__(self, callback: ProgressCallback | None, hardware: Hardware,
                 budget_s: float | None, trials_target: int | None, enabled: bool) -> None:
        self.callback = callback if enabled else None
        self.hardware = hardware.to_dict()
        self.budget_s = budget_s
        self.trials_target = trials_target
        self.started = time.monotonic()
        self.history: list[HistoryPoint] = []
        self.trials: list[TrialSummary] = []
        self.current: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def point(self, point: HistoryPoint) -> None:
        self.history.append(point)
        if len(self.history) > MAX_HISTORY:
            # Thin the older half: the chart keeps its shape, the file stays small.
            half = len(self.history) // 2
            self.history = self.history[:half:2] + self.history[half:]

    def emit(self, phase: str, message: str = "", **current: Any) -> None:
        self.current.update(current)
        if self.callback is None:
            return
        c = self.current
        done = [t for t in self.trials if t.state != "failed"]
        best = min((t.best_val_loss for t in done if t.best_val_loss is not None), default=None)
        running_best = c.get("best_val_loss")
        if running_best is not None:
            best = running_best if best is None else min(best, running_best)
        self.callback(Progress(
            phase=phase,
            trials_done=len(self.trials),
            trials_pruned=sum(t.state == "pruned" for t in self.trials),
            trials_target=self.trials_target,
            trial=c.get("trial"),
            epoch=float(c.get("epoch", 0.0)),
            step=int(c.get("step", 0)),
            total_steps=int(c.get("total_steps", 0)),
            train_loss=c.get("train_loss"),
            val_loss=c.get("val_loss"),
            best_val_loss=best,
            tokens_per_s=c.get("tokens_per_s"),
            elapsed_s=self.elapsed(),
            budget_s=self.budget_s,
            history=tuple(self.history),
            trials=tuple(self.trials),
            hardware=self.hardware,
            message=message,
        ))


class _Runtime:
    """Single-process training, or data parallel under `accelerate launch` / torchrun.

    A distributed launch sets WORLD_SIZE; then accelerate wraps the model in
    DDP and every rank trains on its share of the batches. Only the main
    process writes checkpoints, progress and results.
    """

    def __init__(self, precision: Precision) -> None:
        import torch

        self.precision = precision
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.accelerator = None
        self.scaler = None
        if self.world > 1:
            from accelerate import Accelerator

            mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(precision.autocast or "", "no")
            self.accelerator = Accelerator(mixed_precision=mixed, cpu=precision.device == "cpu")
            self.device = self.accelerator.device
            self.rank = self.accelerator.process_index
        else:
            self.device = torch.device(precision.device)
            self.rank = 0
            if precision.loss_scaling:
                self.scaler = torch.amp.GradScaler("cuda")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> Any:
        import torch

        if self.precision.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.precision.device, dtype=_dtype(self.precision.autocast))

    def prepare(self, model: Any, optimizer: Any) -> tuple[Any, Any]:
        if self.accelerator is not None:
            return self.accelerator.prepare(model, optimizer)
        return model, optimizer

    def unwrap(self, model: Any) -> Any:
        return self.accelerator.unwrap_model(model) if self.accelerator is not None else model

    def backward(self, loss: Any) -> None:
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer: Any, params: list[Any], max_norm: float = 1.0) -> None:
        import torch

        if self.accelerator is not None:
            self.accelerator.clip_grad_norm_(params, max_norm)
            optimizer.step()
        elif self.scaler is not None:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def any(self, flag: bool) -> bool:
        """Whether any rank says yes (so all ranks stop at the same step)."""
        if self.accelerator is None:
            return flag
        import torch

        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


class _Pruned(Exception):
    def __init__(self, summary: TrialSummary) -> None:
        super().__init__("pruned")
        self.summary = summary


def _peak_memory(device: str) -> int | None:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


def _oom_advice(settings: _Settings, hardware: Hardware) -> str:
    smaller = max(1, settings.batch_size // 2)
    parts = [f"--batch-size {smaller}" if settings.batch_size > 1 else None,
             f"--max-length {max(8, settings.max_length // 2)}",
             "--method lora" if settings.method == "full" else None,
             None if settings.gradient_checkpointing else "--gradient-checkpointing"]
    where = hardware.describe()
    return (
        f"the {hardware.device.upper()} ran out of memory ({where}) at batch size "
        f"{settings.batch_size} × {settings.max_length} tokens with {settings.method} "
        f"fine-tuning; try {', '.join(p for p in parts if p)} (or a smaller base model). The "
        "run record is kept"
    )


def save_checkpoint(model: Any, folder: Path, info: Mapping[str, Any]) -> Path:
    """Save weights (adapter or full, safetensors) atomically under `folder/step-N`.

    The weights go to a temporary folder that is renamed into place, then
    `best.json` is replaced to point at it; older checkpoints are removed only
    after that, so a crash at any moment leaves the last good one readable.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(info['step']):07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
    model.save_pretrained(str(tmp))
    (tmp / "README.md").unlink(missing_ok=True)  # peft's model card template
    (tmp / "checkpoint.json").write_text(json.dumps(dict(info), default=str), encoding="utf-8")
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    _write_json_atomic(folder / "best.json", dict(info, checkpoint=name))
    for old in folder.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def best_checkpoint(folder: Path) -> Path | None:
    """The checkpoint `best.json` points at, or None when there is none."""
    pointer = _read_json(folder / "best.json")
    if not pointer:
        return None
    path = folder / pointer["checkpoint"]
    return path if path.is_dir() else None


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _to_device(batch: Mapping[str, Any], device: Any) -> dict[str, Any]:
    if getattr(device, "type", device) == "cuda":
        # Pinned host memory lets the copy run asynchronously with the GPU's work.
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def _val_loss(model: Any, batches: Sequence[Mapping[str, Any]], runtime: _Runtime,
              kind: str) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            with runtime.autocast():
                loss = model(**_to_device(batch, runtime.device)).loss
            n = _loss_tokens(batch, kind)
            total += float(loss.float()) * n
            count += n
    model.train()
    return total / max(count, 1)


@dataclass(frozen=True)
class LoopStats:
    """What one training loop measured (the bench compares these with the Trainer's)."""

    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    peak_memory_bytes: int | None
    final_train_loss: float | None


def train_loop(
    model: Any,
    train: Sequence[Example],
    val: Sequence[Example],
    settings: _Settings,
    *,
    kind: str,
    pad_id: int,
    runtime: _Runtime | None = None,
    checkpoint_dir: Path | None = None,
    deadline: float | None = None,
    stop: StopSignal | None = None,
    reporter: _Reporter | None = None,
    trial: Any = None,
    trial_number: int = 0,
    hardware: Hardware | None = None,
) -> tuple[TrialSummary, LoopStats]:
    """Pond's training loop: length-grouped batches, fused AdamW, autocast, linear decay,
    validation loss `evals_per_epoch` times an epoch, best checkpoint kept, early
    stopping, Optuna pruning.

    Args:
        model: a transformers (or peft) model on the runtime's device.
        deadline: `time.monotonic()` value at which training stops (best kept).
        trial: an Optuna trial to report validation losses to (pruning).

    Returns:
        The trial's summary and the loop's raw measurements.

    Raises:
        OutOfMemory: the device ran out of memory (with what to reduce).
        _Pruned: Optuna pruned the trial (its summary attached).
    """
    import torch

    runtime = runtime or _Runtime(settings.precision)
    hardware = hardware or hardware_report(settings.precision.device)
    device = settings.precision.device
    pad_multiple = 8 if device == "cuda" else 1
    lengths = [len(e.input_ids) + (len(e.labels) if kind == SEQ2SEQ else 0) for e in train]
    steps_per_epoch = max(1, math.ceil(len(train) / settings.batch_size) // runtime.world)
    total_steps = steps_per_epoch * settings.epochs
    eval_every = max(1, steps_per_epoch // settings.evals_per_epoch)
    val_batches = [collate([val[i] for i in range(s, min(s + settings.batch_size * 2, len(val)))],
                           kind, pad_id, pad_multiple)
                   for s in range(0, len(val), settings.batch_size * 2)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0,
                                  fused=device == "cuda")
    warmup = max(1, int(0.05 * total_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer = runtime.prepare(model, optimizer)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rng = random.Random(settings.seed)
    started = time.monotonic()
    step = tokens = 0
    best = math.inf
    best_step: int | None = None
    bad_evals = 0
    # The running train loss stays on the device: reading it every step would make
    # the CPU wait for the GPU and leave the GPU idle while the next batch is built.
    running: Any = None
    running_n = 0
    last_train: float | None = None
    stopped_by = "epochs"
    state = "complete"
    checkpoint: Path | None = None
    try:
        initial = _val_loss(model, val_batches, runtime, kind)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise OutOfMemory(_oom_advice(settings, hardware)) from None
    if reporter:
        reporter.point(HistoryPoint(trial_number, 0, 0.0, 0, reporter.elapsed(), None, initial))
        reporter.emit("training", f"trial {trial_number}: training", trial=trial_number,
                      step=0, total_steps=total_steps, epoch=0.0, val_loss=initial,
                      train_loss=None, best_val_loss=None, tokens_per_s=None)

    def evaluate(epoch: float) -> bool:
        """Validate, keep the best, report; True when training should end here."""
        nonlocal best, best_step, bad_evals, checkpoint, running, running_n, last_train
        loss = _val_loss(model, val_batches, runtime, kind)
        train_loss = float(running) / running_n if running_n else None
        last_train = train_loss if train_loss is not None else last_train
        running, running_n = None, 0
        improved = loss < best - 1e-4 * max(1.0, abs(best) if math.isfinite(best) else 1.0)
        if improved:
            best, best_step, bad_evals = loss, step, 0
            if checkpoint_dir is not None and runtime.is_main:
                checkpoint = save_checkpoint(runtime.unwrap(model), checkpoint_dir,
                                             {"step": step, "epoch": epoch, "val_loss": loss,
                                              "trial": trial_number})
            runtime.barrier()
        else:
            bad_evals += 1
        elapsed = time.monotonic() - started
        if reporter:
            reporter.point(HistoryPoint(trial_number, step, round(epoch, 4), tokens,
                                        reporter.elapsed(), train_loss, loss))
            reporter.emit("training", f"trial {trial_number}: step {step}/{total_steps}",
                          step=step, epoch=epoch, val_loss=loss, train_loss=train_loss,
                          best_val_loss=best, tokens_per_s=tokens / elapsed if elapsed else None)
        if trial is not None:
            trial.report(loss, step)
            if trial.should_prune():
                raise _Pruned(summary("pruned", "pruned"))
        return runtime.any(bad_evals >= settings.patience)

    def summary(final_state: str, why: str) -> TrialSummary:
        seconds = time.monotonic() - started
        gpus = max(1, runtime.world) if device == "cuda" else None
        return TrialSummary(
            number=trial_number, state=final_state, params=settings.params(),
            initial_val_loss=initial, best_val_loss=best if math.isfinite(best) else None,
            best_step=best_step, steps=step, epochs_done=round(step / steps_per_epoch, 3),
            train_tokens=tokens * runtime.world, seconds=round(seconds, 3),
            gpu_seconds=None if gpus is None else round(seconds * gpus, 3),
            tokens_per_s=round(tokens * runtime.world / seconds, 2) if seconds else 0.0,
            peak_memory_bytes=_peak_memory(device), stopped_by=why,
            checkpoint=None if checkpoint is None else str(checkpoint),
        )

    try:
        finished = False
        for epoch in range(settings.epochs):
            batches = length_grouped_batches(lengths, settings.batch_size, rng)
            if runtime.world > 1:
                usable = len(batches) // runtime.world * runtime.world
                batches = batches[runtime.rank:usable:runtime.world]
            for i, index in enumerate(batches):
                halt = (stop is not None and stop()) or (
                    deadline is not None and time.monotonic() >= deadline)
                if runtime.any(halt):
                    stopped_by = "stopped" if stop is not None and stop() else "time_budget"
                    state = "stopped"
                    finished = True
                    break
                batch = collate([train[j] for j in index], kind, pad_id, pad_multiple)
                moved = _to_device(batch, runtime.device)
                with runtime.autocast():
                    loss = model(**moved).loss
                runtime.backward(loss)
                runtime.step(optimizer, params)
                scheduler.step()
                step += 1
                tokens += _tokens_in(batch, kind)
                detached = loss.detach().float()
                running = detached if running is None else running + detached
                running_n += 1
                end_of_epoch = i == len(batches) - 1
                if (step % eval_every == 0 and not end_of_epoch) or end_of_epoch:
                    if evaluate(epoch + (i + 1) / len(batches)):
                        stopped_by, finished = "early_stopping", True
                        break
            if finished:
                break
        if best_step is None or (state == "stopped" and running_n):
            # Stopped before any validation after training began: validate what there is.
            evaluate(step / steps_per_epoch)
    except torch.cuda.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.empty_cache()
        raise OutOfMemory(_oom_advice(settings, hardware)) from None
    if device == "cuda":
        torch.cuda.synchronize()
    result = summary(state, stopped_by)
    stats = LoopStats(steps=step, tokens=result.train_tokens, seconds=result.seconds,
                      tokens_per_s=result.tokens_per_s,
                      peak_memory_bytes=result.peak_memory_bytes, final_train_loss=last_train)
    return result, stats


# --- generation -------------------------------------------------------------------------------


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompt_format: PromptFormat,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    max_length: int | None,
    device: Any = "cpu",
    batch_size: int = 8,
    autocast: Any = None,
) -> list[str]:
    """Greedy generations, one per prompt, formatted exactly as in training.

    Args:
        max_length: the model's context (None when unbounded); prompts longer
            than `max_length - max_new_tokens` tokens keep their end.
    """
    import torch

    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    room = None if max_length is None else max(1, max_length - max_new_tokens)
    encoded = [prompt_format.prompt_ids(tokenizer, p) for p in prompts]
    if room is not None:
        encoded = [ids[-room:] if prompt_format.kind == CAUSAL else ids[:room] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            seq = torch.tensor(encoded[i], dtype=torch.long)
            if prompt_format.kind == CAUSAL:  # left padding: generation continues at the end
                ids[row, width - len(seq):] = seq
                mask[row, width - len(seq):] = 1
            else:
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
        with torch.no_grad(), (autocast or contextlib.nullcontext()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            )
        new = generated[:, width:] if prompt_format.kind == CAUSAL else generated
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
    return out


def score_generations(
    predictions: Sequence[str], references: Sequence[str], *, hf_home: Path | None = None
) -> tuple[dict[str, float], list[str]]:
    """BLEU, sacreBLEU, chrF and ROUGE through the evaluation module's text metrics.

    Returns:
        The metrics (empty when `evaluate` is not installed) and warnings.
    """
    try:
        from core import text_metrics

        pairs = text_metrics.check_pairs(list(predictions), list(references),
                                         prediction_name="the generations",
                                         reference_name="the held-out responses")
        scores = text_metrics.score_texts(pairs, hf_home=hf_home, per_example=False)
    except ImportError as exc:
        return {}, [f"BLEU/ROUGE were not computed: {exc.name or exc} is not installed"]
    return dict(scores.metrics), list(scores.warnings)


# --- int8 -------------------------------------------------------------------------------------


def _linearize(model: Any) -> Any:
    """Replace transformers' Conv1D (GPT-2's projections) with nn.Linear, in place.

    Dynamic quantization only knows nn.Linear; Conv1D is a linear layer with
    its weight transposed, so this changes no output.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data.clone()
                setattr(module, child_name, linear)
        del name
    return model


def quantize_int8(model: Any) -> Any:
    """torch's dynamic int8 quantization of every linear layer, for CPU inference.

    Weights are stored in int8 and activations quantized on the fly, so this
    runs from the fp32 weights at load time and needs no calibration data.
    """
    import torch

    model = _linearize(model.float().cpu().eval())
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which Pond does
        # not ship; the eager dynamic path still works on this torch.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _size_bytes(model: Any) -> int:
    total = 0
    for tensor in list(model.state_dict().values()):
        if hasattr(tensor, "element_size"):
            total += tensor.numel() * tensor.element_size()
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None:
            with contextlib.suppress(Exception):
                weight = module.weight()
                total += weight.numel() * weight.element_size()
    return total


def _latency_ms(generate: Callable[[list[str]], list[str]], prompts: Sequence[str]) -> float:
    """Median milliseconds to answer one prompt alone (as a server does)."""
    times = []
    generate([prompts[0]])  # warm-up
    for prompt in prompts:
        started = time.perf_counter()
        generate([prompt])
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return times[len(times) // 2]


# --- a whole run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneResult:
    """Everything a fine-tuning run produced (also `result.json` in its run folder).

    Attributes:
        trials: every trial with quality and cost, so a cheaper one of nearly
            equal quality can be picked.
        best_trial: the trial with the lowest validation loss.
        test_loss / text_metrics: on the held-out test split, never trained on
            nor used to pick a trial.
        samples: test prompts with their reference and the generation.
        int8: the merged fp32 model against its int8 quantization on a CPU:
            metrics and median latency of each (None when not measured).
    """

    run_dir: str
    base_model: dict[str, Any]
    method: str
    kind: str
    prompt_format: str
    config: dict[str, Any]
    hardware: dict[str, Any]
    precision: str
    memory_estimate: dict[str, Any]
    dataset: dict[str, Any] | None
    columns: dict[str, str]
    splits: dict[str, int]
    truncated_rows: int
    warnings: tuple[str, ...]
    trials: tuple[TrialSummary, ...]
    best_trial: int
    best_params: dict[str, Any]
    initial_val_loss: float | None
    val_loss: float | None
    test_loss: float | None
    text_metrics: dict[str, float]
    samples: tuple[dict[str, str], ...]
    int8: dict[str, Any] | None
    history: tuple[HistoryPoint, ...]
    study: dict[str, Any] | None
    stop_reason: str
    train_seconds: float
    elapsed_s: float

    @property
    def best(self) -> TrialSummary:
        return next(t for t in self.trials if t.number == self.best_trial)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["perplexity"] = (math.exp(self.test_loss) if self.test_loss is not None
                             and self.test_loss < 50 else None)
        return out


def _settings_for(config: FinetuneConfig, *, batch: int, ckpt: bool, max_length: int,
                  precision: Precision, **override: Any) -> _Settings:
    return _Settings(
        method=config.method,
        learning_rate=float(override.get("learning_rate")
                            or config.learning_rate or DEFAULT_LR[config.method]),
        epochs=int(override.get("epochs", config.epochs)),
        batch_size=int(override.get("batch_size", batch)),
        max_length=max_length,
        lora_r=int(override.get("lora_r", config.lora_r)),
        lora_alpha=int(override.get("lora_alpha", config.lora_alpha)),
        lora_dropout=float(override.get("lora_dropout", config.lora_dropout)),
        gradient_checkpointing=ckpt,
        precision=precision,
        evals_per_epoch=config.evals_per_epoch,
        patience=config.patience,
        seed=config.seed,
    )


def search_space(config: FinetuneConfig, batch: int, train_rows: int) -> dict[str, Any]:
    """What Optuna tunes: learning rate, LoRA rank/alpha/dropout, epochs, batch size."""
    low, high = LR_RANGE[config.method]
    batches = sorted({max(1, min(b, train_rows)) for b in (max(1, batch // 2), batch, batch * 2)})
    space: dict[str, Any] = {
        "learning_rate": {"type": "float", "low": low, "high": high, "log": True},
        "epochs": {"type": "int", "low": 1, "high": max(1, config.epochs)},
        "batch_size": {"type": "categorical", "choices": batches},
    }
    if config.method == "lora":
        space["lora_r"] = {"type": "categorical", "choices": list(LORA_RANKS)}
        space["lora_alpha"] = {"type": "categorical", "choices": list(LORA_ALPHAS)}
        space["lora_dropout"] = {"type": "float", "low": 0.0, "high": 0.2}
    return space


def _suggest(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            out[name] = trial.suggest_float(name, spec["low"], spec["high"],
                                            log=spec.get("log", False))
        elif spec["type"] == "int":
            out[name] = trial.suggest_int(name, spec["low"], spec["high"])
        else:
            out[name] = trial.suggest_categorical(name, spec["choices"])
    return out


class _Run:
    """The state of one run shared by its trials: data, tokenizer, hardware, budget."""

    def __init__(self, base: BaseModel, config: FinetuneConfig, run_dir: Path,
                 on_progress: ProgressCallback | None, stop: StopSignal | None) -> None:
        self.base = base
        self.config = config
        self.run_dir = run_dir
        self.stop = stop
        import torch  # noqa: F401 - so the hardware report asks torch, which will train

        self.hardware = hardware_report(config.device)
        self.precision = choose_precision(self.hardware, config.method)
        self.runtime = _Runtime(self.precision)
        self.reporter = _Reporter(on_progress, self.hardware, config.time_budget,
                                  config.n_trials, self.runtime.is_main)
        self.deadline = (None if config.time_budget is None
                         else time.monotonic() + config.time_budget)

    def out_of_time(self) -> bool:
        return (self.deadline is not None and time.monotonic() >= self.deadline) or bool(
            self.stop is not None and self.stop())


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _run_trial(run: _Run, settings: _Settings, train: Sequence[Example], val: Sequence[Example],
               pad_id: int, number: int, trial: Any = None) -> TrialSummary:
    import torch

    _seed_everything(settings.seed + number)
    model = _build_model(run.base, settings, run.runtime.device)
    try:
        summary, _ = train_loop(
            model, train, val, settings, kind=run.base.kind, pad_id=pad_id,
            runtime=run.runtime, checkpoint_dir=run.run_dir / "trials" / str(number),
            deadline=run.deadline, stop=run.stop, reporter=run.reporter, trial=trial,
            trial_number=number, hardware=run.hardware,
        )
    finally:
        del model
        if run.precision.device == "cuda":
            torch.cuda.empty_cache()
    return summary


def _tune(run: _Run, config: FinetuneConfig, base_settings: _Settings, train: Sequence[Example],
          val: Sequence[Example], pad_id: int, storage: Any, study_name: str | None
          ) -> tuple[list[TrialSummary], dict[str, Any]]:
    import optuna

    from core.automl import open_storage

    if run.runtime.world > 1:
        raise InvalidInput(
            "--trials tunes one trial at a time and cannot run under a distributed launch; "
            "tune on one GPU, then train the best settings with `accelerate launch`"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend, described = open_storage(storage)
    name = study_name or f"finetune-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    space = search_space(config, base_settings.batch_size, len(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=name, storage=backend, direction="minimize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=config.seed),
            # Compare a trial with the others at the same step, after two finished
            # ones and the trial's first validation.
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
    first = {k: v for k, v in base_settings.params().items() if k in space}
    first["batch_size"] = base_settings.batch_size
    study.enqueue_trial(first, skip_if_exists=True)  # the defaults are trial 0: a baseline
    summaries: list[TrialSummary] = []
    assert config.n_trials is not None
    for _ in range(config.n_trials):
        if run.out_of_time() and summaries:
            break
        trial = study.ask()
        chosen = _suggest(trial, space)
        settings = replace(base_settings, **chosen)
        number = trial.number
        try:
            summary = _run_trial(run, settings, train, val, pad_id, number, trial)
        except _Pruned as pruned:
            summary = pruned.summary
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except OutOfMemory as exc:
            summary = TrialSummary(number, "failed", settings.params(), None, None, None, 0, 0.0,
                                   0, 0.0, None, 0.0, None, "out_of_memory", None, str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, summary.best_val_loss if summary.best_val_loss is not None
                       else float("inf"))
        summaries.append(summary)
        run.reporter.trials = list(summaries)
        run.reporter.emit("training", f"trial {number} {summary.state}")
    return summaries, {"name": name, "storage": described, "search_space": space}


def _load_trained(run_dir: Path, result_like: Mapping[str, Any], device: str,
                  dtype: str = "float32", checkpoint: Path | None = None) -> Any:
    """The best trial's model: the base with its adapter, or the full checkpoint."""
    base = result_like["base_model"]
    kind = result_like["kind"]
    ckpt = checkpoint or Path(result_like["checkpoint"])
    if result_like["method"] == "lora":
        import peft

        model = _load_weights(Path(base["path"]), kind, _dtype(dtype), base["reference"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = peft.PeftModel.from_pretrained(model, str(ckpt))
    else:
        model = _load_weights(ckpt, kind, _dtype(dtype), str(ckpt))
    model.config.use_cache = True
    return model.to(device).eval()


def export_merged(run_dir: str | os.PathLike[str]) -> Path:
    """Write the best trial as one standalone model (adapter merged into its base), fp32.

    Returns:
        The `merged/` folder: config, safetensors weights, tokenizer, generation config.

    Raises:
        NotFound: the run folder has no finished training.
    """
    folder = Path(run_dir)
    record = _read_json(folder / RUN_FILE) or {}
    if not record.get("checkpoint"):
        raise NotFound(f"{folder} holds no finished fine-tuning to export")
    target = folder / "merged"
    if (target / "config.json").is_file():
        return target
    model = _load_trained(folder, record, "cpu")
    if record["method"] == "lora":
        model = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=".merged-", dir=folder))
    model.save_pretrained(str(tmp))
    for name in os.listdir(folder / "tokenizer"):
        shutil.copyfile(folder / "tokenizer" / name, tmp / name)
    shutil.copyfile(folder / "generation_config.json", tmp / "generation_config.json")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _compare_int8(run_dir: Path, record: Mapping[str, Any], tokenizer: Any, fmt: PromptFormat,
                  prompts: Sequence[str], references: Sequence[str], max_new_tokens: int,
                  max_length: int | None, hf_home: Path | None,
                  known: tuple[list[str], dict[str, float]] | None = None) -> dict[str, Any]:
    """Quality and latency of the merged fp32 model against its int8 version, on a CPU.

    `known` holds generations already scored on the same rows: identical texts
    are not scored again (scoring costs seconds).
    """
    merged_dir = export_merged(run_dir)
    fp32 = _load_weights(merged_dir, record["kind"], _dtype("float32"), str(merged_dir))
    fp32.config.use_cache = True
    fp32.eval()
    int8 = quantize_int8(_load_weights(merged_dir, record["kind"], _dtype("float32"),
                                       str(merged_dir)))
    out: dict[str, Any] = {"rows": len(prompts)}
    for label, model in (("fp32", fp32), ("int8", int8)):
        def generate(batch: list[str], model: Any = model) -> list[str]:
            return generate_texts(model, tokenizer, fmt, batch, max_new_tokens=max_new_tokens,
                                  max_length=max_length, device="cpu")

        texts = generate(list(prompts))
        if known is not None and texts == known[0]:
            metrics = dict(known[1])
        else:
            metrics, _ = score_generations(texts, references, hf_home=hf_home)
            known = (texts, metrics)
        out[label] = {
            "metrics": metrics,
            "latency_ms": round(_latency_ms(generate, prompts[:LATENCY_PROMPTS]), 3),
            "size_bytes": _size_bytes(model),
        }
    out["delta"] = {k: out["int8"]["metrics"][k] - out["fp32"]["metrics"].get(k, 0.0)
                    for k in out["int8"]["metrics"]}
    fp32_ms = out["fp32"]["latency_ms"]
    out["speedup"] = round(fp32_ms / out["int8"]["latency_ms"], 3) if out["int8"][
        "latency_ms"] else None
    return out


def finetune_frame(
    frame: pd.DataFrame,
    *,
    base_model: str | os.PathLike[str] | BaseModel,
    prompt_col: str,
    response_col: str,
    run_dir: str | os.PathLike[str],
    config: FinetuneConfig | None = None,
    on_progress: ProgressCallback | None = None,
    stop: StopSignal | None = None,
    storage: Any = None,
    study_name: str | None = None,
    hf_home: Path | None = None,
    dataset: Mapping[str, Any] | None = None,
    source: str = "the data",
) -> FinetuneResult:
    """Fine-tune a base model on the prompt/response pairs of a table.

    Splits the rows into training, validation (picks checkpoints and trials)
    and test (scored once at the end); trains one configuration, or with
    `config.n_trials` lets Optuna tune it; evaluates the best trial on the test
    split (loss, BLEU/ROUGE, sample generations); exports it merged and measures
    the int8 variant. `run.json` records the request first and the outcome last,
    also when the run fails.

    Args:
        base_model: a model folder, a cached hub name, or a resolved `BaseModel`.
        run_dir: where checkpoints and results go (created; reused folders are
            refused when they hold a finished run).
        stop: polled every step; when it returns True the run stops and keeps
            the best checkpoint so far.
        storage: Optuna storage for trials (None: in memory).
        hf_home: where `evaluate` keeps its caches.
        dataset: the lineage of the data (name, version, content_sha256).

    Returns:
        The result, also written to `run_dir/result.json`.

    Raises:
        InvalidInput: bad settings, a base path that is not a model, a tokenizer
            without pad and eos tokens, unusable columns, too few rows, a
            `max_length` beyond the model's context.
        OutOfMemory: the device ran out of memory (every trial, with trials).
    """
    config = check_config(config or FinetuneConfig())
    base = base_model if isinstance(base_model, BaseModel) else resolve_base_model(
        base_model, allow_hub=config.allow_hub)
    if config.method == "full" and base.n_params > FULL_MAX_PARAMS:
        raise InvalidInput(
            f"base model {base.reference!r} has {base.n_params / 1e9:.1f}B parameters; full "
            f"fine-tuning is offered up to {FULL_MAX_PARAMS / 1e9:.0f}B (it needs about 16 "
            "bytes per parameter): use --method lora"
        )
    if config.prompt_format == "chat" and base.kind == SEQ2SEQ:
        raise InvalidInput("chat templates are for causal language models; use "
                           "--prompt-format plain with a seq2seq model")
    if config.max_length is not None and base.context_length is not None \
            and config.max_length > base.context_length:
        raise InvalidInput(
            f"max_length {config.max_length} is longer than the context of base model "
            f"{base.reference!r} ({base.context_length} tokens); pass --max-length "
            f"{base.context_length} or less"
        )
    rows = prepare_rows(frame, prompt_col, response_col, source=source)
    folder = Path(run_dir)
    if (folder / RESULT_FILE).exists():
        raise InvalidInput(f"{folder} already holds a finished fine-tuning; pick a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record: dict[str, Any] = {
        "status": "running", "started_at": datetime.now(UTC).isoformat(),
        "base_model": base.to_dict(), "method": config.method, "kind": base.kind,
        "config": config.to_dict(), "dataset": dict(dataset) if dataset else None,
        "columns": {"prompt": prompt_col, "response": response_col},
    }
    run: _Run | None = None
    try:
        run = _Run(base, config, folder, on_progress, stop)
        record.update(hardware=run.hardware.to_dict(), precision=run.precision.describe())
        if run.runtime.is_main:
            _write_json_atomic(folder / RUN_FILE, record)
        run.reporter.emit("preparing", "tokenizing the data")
        result = _finetune(run, rows, record, storage, study_name, hf_home, started)
    except BaseException as exc:
        if run is None or run.runtime.is_main:
            record.update(status="failed", finished_at=datetime.now(UTC).isoformat(),
                          error=str(exc) if isinstance(exc, PondError)
                          else f"{type(exc).__name__}: {exc}")
            _write_json_atomic(folder / RUN_FILE, record)
        raise
    return result


def _finetune(run: _Run, rows: PreparedRows, record: dict[str, Any], storage: Any,
              study_name: str | None, hf_home: Path | None, started: float) -> FinetuneResult:
    base, config, folder = run.base, run.config, run.run_dir
    tokenizer, notes = load_tokenizer(base, kind=base.kind)
    if config.prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise InvalidInput(
            f"the tokenizer of base model {base.reference!r} has no chat template; use "
            "--prompt-format plain"
        )
    fmt = PromptFormat(config.prompt_format, base.kind)
    train_i, val_i, test_i = split_rows(len(rows.prompts), config.seed)
    limit = base.context_length or 1024
    if config.max_length is not None:
        max_length = config.max_length
    else:
        longest = max(_raw_length(tokenizer, fmt, p, r)
                      for p, r in zip(rows.prompts, rows.responses, strict=True))
        max_length = min(limit, max(16, -(-longest // 8) * 8))
    examples = encode_examples(tokenizer, fmt, rows.prompts, rows.responses, max_length)
    truncated = sum(e.truncated for e in examples)
    warns = list(rows.warnings) + notes
    if truncated:
        warns.append(
            f"{truncated} of {len(examples)} pairs were longer than {max_length} tokens and were "
            "cut (the prompt from its start, the response at its end); raise --max-length"
            + (f" (up to the model's context, {base.context_length})" if base.context_length
               else "") + " to keep them whole"
        )
    train = [examples[i] for i in train_i]
    val = [examples[i] for i in val_i]
    batch, ckpt, estimate = _choose_batch(base, run.hardware, config, max_length, len(train))
    if estimate.fits is False:
        warns.append(f"the memory estimate ({estimate.describe()}) is more than this device "
                     "has free; the run may run out of memory")
    settings = _settings_for(config, batch=batch, ckpt=ckpt, max_length=max_length,
                             precision=run.precision)
    record.update(memory_estimate=estimate.to_dict(), max_length=max_length,
                  splits={"train": len(train), "validation": len(val), "test": len(test_i)})
    if run.runtime.is_main:
        tokenizer.save_pretrained(str(folder / "tokenizer"))
        _generation_config(tokenizer, base.kind, config.max_new_tokens).save_pretrained(
            str(folder))
        _write_json_atomic(folder / RUN_FILE, record)
    run.reporter.emit("training", f"training on {run.hardware.describe()}", total_steps=0)
    pad_id = tokenizer.pad_token_id
    study = None
    if config.n_trials:
        summaries, study = _tune(run, config, settings, train, val, pad_id, storage, study_name)
    else:
        summaries = [_run_trial(run, settings, train, val, pad_id, 0)]
        run.reporter.trials = list(summaries)
    # Only the main process writes checkpoints; the other ranks know the losses alone.
    usable = [t for t in summaries if t.best_val_loss is not None
              and (t.checkpoint or not run.runtime.is_main)]
    if not usable:
        failed = [t.error for t in summaries if t.error]
        if failed:
            raise OutOfMemory(failed[-1] or "every trial ran out of memory")
        raise PondError("no trial produced a checkpoint; give the run more time or epochs")
    best = min(usable, key=lambda t: t.best_val_loss or math.inf)
    train_seconds = round(sum(t.seconds for t in summaries), 3)
    record.update(best_trial=best.number, checkpoint=best.checkpoint)
    run.runtime.barrier()
    if not run.runtime.is_main:
        return _placeholder_result(record)
    _write_json_atomic(folder / RUN_FILE, record)

    run.reporter.emit("evaluating", "scoring the held-out test split")
    device = run.precision.device
    model = _load_trained(folder, record, device,
                          dtype=run.precision.autocast or run.precision.weights)
    test = [examples[i] for i in test_i]
    test_batches = [collate(test[s:s + settings.batch_size], base.kind, pad_id)
                    for s in range(0, len(test), settings.batch_size)]
    test_loss = _val_loss(model, test_batches, _Runtime(replace(run.precision, loss_scaling=False)),
                          base.kind)
    prompts = [rows.prompts[i] for i in test_i]
    references = [rows.responses[i] for i in test_i]
    generations = generate_texts(model, tokenizer, fmt, prompts,
                                 max_new_tokens=config.max_new_tokens,
                                 max_length=base.context_length, device=device,
                                 batch_size=settings.batch_size * 2)
    metrics, metric_notes = score_generations(generations, references, hf_home=hf_home)
    warns += metric_notes
    samples = tuple({"prompt": p, "reference": r, "generated": g}
                    for p, r, g in list(zip(prompts, references, generations, strict=True))
                    [:SAMPLE_ROWS])
    del model
    int8 = None
    if config.compare_int8:
        run.reporter.emit("exporting", "merging the model and measuring its int8 variant")
        keep = min(len(prompts), QUANT_EVAL_ROWS)
        int8 = _compare_int8(folder, record, tokenizer, fmt, prompts[:keep], references[:keep],
                             config.max_new_tokens, base.context_length, hf_home,
                             known=(generations[:keep], metrics) if keep == len(prompts)
                             else None)
    result = FinetuneResult(
        run_dir=str(folder), base_model=base.to_dict(), method=config.method, kind=base.kind,
        prompt_format=config.prompt_format, config=config.to_dict(),
        hardware=run.hardware.to_dict(), precision=run.precision.describe(),
        memory_estimate=estimate.to_dict(), dataset=record.get("dataset"),
        columns=record["columns"], splits=record["splits"], truncated_rows=truncated,
        warnings=tuple(warns), trials=tuple(summaries), best_trial=best.number,
        best_params=best.params, initial_val_loss=best.initial_val_loss,
        val_loss=best.best_val_loss, test_loss=test_loss, text_metrics=metrics, samples=samples,
        int8=int8, history=tuple(run.reporter.history), study=study,
        stop_reason=best.stopped_by if len(summaries) == 1 else (
            "stopped" if run.stop is not None and run.stop() else
            "time_budget" if run.out_of_time() else "trials"),
        train_seconds=train_seconds, elapsed_s=round(time.monotonic() - started, 3),
    )
    record.update(status="done", finished_at=datetime.now(UTC).isoformat(), max_length=max_length,
                  prompt_format=config.prompt_format, max_new_tokens=config.max_new_tokens)
    _write_json_atomic(folder / RUN_FILE, record)
    _write_json_atomic(folder / RESULT_FILE, result.to_dict())
    run.reporter.emit("done", f"best trial {best.number}: validation loss "
                              f"{best.best_val_loss:.4f}")
    return result


def _placeholder_result(record: Mapping[str, Any]) -> FinetuneResult:
    """What a non-main rank of a distributed run returns (the main one evaluates)."""
    return FinetuneResult(
        run_dir="", base_model=record["base_model"], method=record["method"], kind=record["kind"],
        prompt_format=record["config"]["prompt_format"], config=record["config"], hardware={},
        precision="", memory_estimate={}, dataset=None, columns=record["columns"], splits={},
        truncated_rows=0, warnings=(), trials=(), best_trial=record["best_trial"],
        best_params={}, initial_val_loss=None, val_loss=None, test_loss=None, text_metrics={},
        samples=(), int8=None, history=(), study=None, stop_reason="", train_seconds=0.0,
        elapsed_s=0.0,
    )


def _generation_config(tokenizer: Any, kind: str, max_new_tokens: int) -> Any:
    transformers = _transformers()
    extra = {"decoder_start_token_id": tokenizer.pad_token_id} if kind == SEQ2SEQ else {}
    return transformers.GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


def load_result(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The `result.json` of a finished run.

    Raises:
        NotFound: the folder holds no finished run.
    """
    data = _read_json(Path(run_dir) / RESULT_FILE)
    if data is None:
        raise NotFound(f"no finished fine-tuning in {run_dir}")
    return data


def finished_runs(ws: Workspace, limit: int = 20) -> list[dict[str, Any]]:
    """The workspace's finished fine-tuning runs, newest first: each run's `result.json`,
    from the CLI's run folders and the app's background jobs (a run still going, failed
    or stopped before a result has none and is left out)."""
    from core import training_jobs

    folders = [*runs_dir(ws).glob("*"),
               *training_jobs.jobs_dir(ws).glob(f"*/{training_jobs.RUN_DIR}")]
    found = []
    for folder in folders:
        result = _read_json(folder / RESULT_FILE)
        # Training jobs keep AutoML results in the same layout: only fine-tunings count.
        if isinstance(result, dict) and "base_model" in result and "text_metrics" in result:
            found.append((folder.stat().st_mtime, result))
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [result for _, result in found[:limit]]


# --- the workspace: datasets, jobs, the registry -------------------------------------------


def finetune_dataset(
    ws: Workspace,
    dataset: str,
    *,
    actor: User,
    base_model: str,
    prompt_col: str,
    response_col: str,
    config: FinetuneConfig | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: StopSignal | None = None,
    storage: str | None = None,
    study_name: str | None = None,
) -> FinetuneResult:
    """`finetune_frame` on a dataset version of the workspace, as `actor`.

    The workspace is read briefly at the start (no connection is held while
    training); trials keep their Optuna study in a journal under `studies/`.

    Args:
        dataset: "name" or "name:version".
        run_dir: default a new folder under `runs_dir(ws)` (`POND_HOME/finetune/`).
        storage: an Optuna storage URL (default: a journal file in the workspace).

    Returns:
        The result, with the dataset's name, version and content hash as lineage.

    Raises:
        PermissionDenied: the actor may not train.
        NotFound: no such dataset.
        InvalidInput, OutOfMemory: see `finetune_frame`.
    """
    from core import auth, datasets

    auth.require(actor, "train")
    config = check_config(config or FinetuneConfig())
    if run_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InvalidInput(
            "under a distributed launch every process must write to the same run folder: "
            "pass --run-dir FOLDER"
        )
    dv = datasets.resolve(ws, dataset)
    missing = [c for c in (prompt_col, response_col) if c not in dv.column_names]
    if missing:
        raise InvalidInput(
            f"dataset {dv.ref} has no column {', '.join(repr(c) for c in missing)}; its columns "
            f"are {', '.join(repr(c) for c in dv.column_names[:30])}"
        )
    base = resolve_base_model(base_model, allow_hub=config.allow_hub)
    frame = datasets.load_frame(ws, dv, columns=list(dict.fromkeys([prompt_col, response_col])))
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    if run_dir is None:
        runs_dir(ws).mkdir(parents=True, exist_ok=True)
    folder = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"{dv.name}-{stamp}-",
                                                                  dir=runs_dir(ws)))
    name = study_name or f"finetune-{dv.name}-{stamp}"
    if config.n_trials and storage is None:
        ws.studies_dir.mkdir(parents=True, exist_ok=True)
        storage = str(ws.studies_dir / f"{name}.journal")
    return finetune_frame(
        frame, base_model=base, prompt_col=prompt_col, response_col=response_col,
        run_dir=folder, config=config, on_progress=on_progress, stop=stop, storage=storage,
        study_name=name, hf_home=ws.home / "hf",
        dataset={"name": dv.name, "version": dv.version, "content_sha256": dv.content_sha256},
        source=f"dataset {dv.ref}",
    )


def runs_dir(ws: Workspace) -> Path:
    """Where CLI runs keep their checkpoints and results unless told otherwise."""
    return ws.home / "finetune"


@dataclass(frozen=True)
class Plan:
    """What the page shows before a run starts: hardware, memory, model and data."""

    hardware: Hardware
    base_model: BaseModel
    estimate: MemoryEstimate
    rows: int
    notes: tuple[str, ...]


def plan(
    ws: Workspace, dataset: str, base_model: str, config: FinetuneConfig | None = None
) -> Plan:
    """Hardware, base model and a memory estimate for a run, without loading torch.

    The estimate assumes `config.max_length` (default the model's context, up
    to 1024 tokens: the run itself picks the longest example).

    Raises:
        NotFound: no such dataset. InvalidInput: a bad base model or setting.
    """
    from core import datasets

    config = check_config(config or FinetuneConfig())
    dv = datasets.resolve(ws, dataset)
    base = resolve_base_model(base_model, allow_hub=False, with_hash=False)
    hardware = hardware_report(config.device)
    length = config.max_length or min(base.context_length or 1024, 1024)
    train_rows = max(1, dv.row_count - 2 * max(1, round(dv.row_count * 0.1)))
    _, _, estimate = _choose_batch(base, hardware, config, length, train_rows)
    notes = []
    if dv.row_count < MIN_ROWS:
        notes.append(f"dataset {dv.ref} has {dv.row_count} rows; at least {MIN_ROWS} are needed")
    if config.method == "full" and base.n_params > FULL_MAX_PARAMS:
        notes.append("this model is too large for full fine-tuning; use LoRA")
    if estimate.fits is False:
        notes.append("the estimate is more than the free memory: lower the batch size or "
                     "max length, or use LoRA")
    return Plan(hardware, base, estimate, dv.row_count, tuple(notes))


def start_finetune(
    ws: Workspace,
    *,
    actor: User,
    dataset: str,
    base_model: str,
    prompt_col: str,
    response_col: str,
    config: FinetuneConfig | None = None,
    register_model: str | None = None,
) -> str:
    """Launch a fine-tuning in a detached worker (`pond finetune`), for the app.

    Everything is checked first (the actor, the dataset and its columns, the
    base model, the settings), so a bad request fails here and not in the worker.

    Returns:
        The job id, for `training_jobs.read_progress`, `request_stop` and
        `register_job`.

    Raises:
        PermissionDenied, NotFound, InvalidInput: a request that cannot run.
    """
    from core import auth, datasets, training_jobs

    auth.require(actor, "train")
    config = check_config(config or FinetuneConfig())
    dv = datasets.resolve(ws, dataset)
    missing = [c for c in (prompt_col, response_col) if c not in dv.column_names]
    if missing:
        raise InvalidInput(
            f"dataset {dv.ref} has no column {', '.join(repr(c) for c in missing)}"
        )
    if dv.row_count < MIN_ROWS:
        raise InvalidInput(
            f"dataset {dv.ref} has {dv.row_count} rows; fine-tuning needs at least {MIN_ROWS}"
        )
    base = resolve_base_model(base_model, allow_hub=config.allow_hub, with_hash=False)
    if register_model:
        from core.automl import check_can_register

        check_can_register(actor, register_model)
    argv = ["finetune", "--dataset", dv.ref, "--base-model", str(base.path),
            "--prompt-col", prompt_col, "--response-col", response_col,
            *config_arguments(config)]
    if register_model:
        argv += ["--register", register_model]
    request = {"dataset": dv.ref, "base_model": base.reference, "prompt_col": prompt_col,
               "response_col": response_col, "register_model": register_model,
               "time_budget": config.time_budget, **config.to_dict()}
    return training_jobs.launch_job(ws, actor=actor, kind="finetune", request=request, argv=argv)


def config_arguments(config: FinetuneConfig) -> list[str]:
    """The `pond finetune` options that reproduce `config`."""
    args = ["--method", config.method, "--epochs", str(config.epochs),
            "--lora-r", str(config.lora_r), "--lora-alpha", str(config.lora_alpha),
            "--lora-dropout", repr(float(config.lora_dropout)), "--seed", str(config.seed),
            "--prompt-format", config.prompt_format, "--device", config.device,
            "--patience", str(config.patience), "--evals-per-epoch", str(config.evals_per_epoch),
            "--max-new-tokens", str(config.max_new_tokens)]
    for flag, value in (("--lr", config.learning_rate), ("--batch-size", config.batch_size),
                        ("--max-length", config.max_length), ("--trials", config.n_trials),
                        ("--time-budget", config.time_budget)):
        if value is not None:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    if config.gradient_checkpointing is not None:
        args.append("--gradient-checkpointing" if config.gradient_checkpointing
                    else "--no-gradient-checkpointing")
    if not config.compare_int8:
        args.append("--no-int8")
    if config.allow_hub:
        args.append("--allow-hub")
    return args


def _files_of(folder: Path, prefix: str) -> dict[str, Path]:
    out = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix in (
                ".json", ".safetensors", ".txt", ".model", ".jinja"):
            if path.name in ("checkpoint.json", "training_args.bin", "README.md"):
                continue
            out[f"{prefix}/{path.name}"] = path
    return out


def _variant_files(run_dir: Path, record: Mapping[str, Any], variant: str,
                   checkpoint: Path) -> tuple[dict[str, Path], str]:
    if variant == "weights" and record["method"] == "lora":
        return _files_of(checkpoint, "adapter"), "adapter"
    if variant == "weights":
        return _files_of(checkpoint, "model"), "model"
    merged = export_merged(run_dir)
    files = {k: v for k, v in _files_of(merged, "model").items()
             if not _TOKENIZER_FILES.match(Path(k).name) and Path(k).name
             != "generation_config.json"}
    return files, "model"


def register_run(
    ws: Workspace,
    run_dir: str | os.PathLike[str],
    model_name: str,
    *,
    actor: User,
    variant: str = "weights",
    comment: str | None = None,
    parent_version: int | None = None,
) -> Any:
    """Register a finished run's best trial as a new model version, pending review.

    The version holds safetensors weights (the LoRA adapter, or full weights),
    the tokenizer, the generation config and `pond_text_model.json` (base
    model reference and sha256, prompt format, lengths), never a pickle.

    Args:
        variant: "weights" (the adapter or full weights as trained), "merged"
            (the adapter merged into its base: standalone), or "int8" (merged,
            served with dynamic int8 quantization on a CPU).

    Returns:
        The registry's `ModelVersion`.

    Raises:
        NotFound: no finished run in the folder.
        InvalidInput: an unknown variant. PermissionDenied: from the registry.
    """
    from core import auth, registry

    if variant not in VARIANTS:
        raise InvalidInput(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    auth.require(actor, "register")
    folder = Path(run_dir)
    result = load_result(folder)
    record = _read_json(folder / RUN_FILE) or {}
    checkpoint = Path(record.get("checkpoint") or "")
    if not checkpoint.is_dir():
        raise NotFound(f"the best checkpoint of the run in {folder} is missing ({checkpoint})")
    weights, weights_dir = _variant_files(folder, record, variant, checkpoint)
    files = dict(weights)
    files.update(_files_of(folder / "tokenizer", "tokenizer"))
    files["generation_config.json"] = folder / "generation_config.json"
    manifest = {
        "format": 1,
        "kind": result["kind"],
        "method": result["method"],
        "variant": variant,
        "weights": weights_dir,
        "quantize": "dynamic_int8" if variant == "int8" else None,
        "base_model": {k: result["base_model"][k] for k in
                       ("reference", "path", "sha256", "architecture", "model_type",
                        "n_params")},
        "prompt_format": result["prompt_format"],
        "separator": SEPARATOR,
        "max_length": record.get("max_length"),
        "context_length": result["base_model"]["context_length"],
        "max_new_tokens": result["config"]["max_new_tokens"],
    }
    ws.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="register-", dir=ws.tmp_dir) as tmp:
        manifest_path = Path(tmp) / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        files[MANIFEST] = manifest_path
        metrics = _version_metrics(result, variant)
        best = next(t for t in result["trials"] if t["number"] == result["best_trial"])
        params = dict(result["best_params"], variant=variant, prompt_format=result[
            "prompt_format"], base_model=result["base_model"]["reference"])
        lineage = registry.make_lineage(
            dataset=result.get("dataset"),
            training_config=dict(result["config"], columns=result["columns"],
                                 splits=result["splits"]),
            search_space=(result.get("study") or {}).get("search_space"),
            optuna_study=({k: result["study"][k] for k in ("name", "storage")}
                          if result.get("study") else None),
            parent_version=parent_version,
            base_model=manifest["base_model"],
            hardware=result["hardware"].get("description"),
            best_trial=best["number"],
        )
        if not comment:
            where = result.get("dataset") or {}
            on = f" on {where['name']}:{where['version']}" if where else ""
            bleu = result["text_metrics"].get("sacrebleu")
            comment = (
                f"{result['method'].upper()} fine-tune of {result['base_model']['reference']}"
                f"{on} ({variant}): test loss {result['test_loss']:.4g}"
                + (f", sacreBLEU {bleu:.3g}" if bleu is not None else "")
            )
        return registry.register_version(
            ws, model_name, files, metrics=metrics, params=params, lineage=lineage, actor=actor,
            flavor=FLAVOR, task=TASK, parent_version=parent_version,
            tags={"base_model": result["base_model"]["reference"][:256],
                  "method": result["method"], "variant": variant},
            request_approval=True, comment=comment,
        )


def _version_metrics(result: Mapping[str, Any], variant: str) -> dict[str, float | None]:
    best = next(t for t in result["trials"] if t["number"] == result["best_trial"])
    metrics: dict[str, float | None] = {
        "val_loss": result["val_loss"], "test_loss": result["test_loss"],
        "test_perplexity": result.get("perplexity"),
        "train_tokens_per_s": best["tokens_per_s"], "train_seconds": best["seconds"],
        "gpu_seconds": best["gpu_seconds"],
        "peak_memory_mb": None if best["peak_memory_bytes"] is None
        else best["peak_memory_bytes"] / 2**20,
    }
    quant = result.get("int8")
    if variant == "int8" and quant:
        metrics.update({f"test_{k}": v for k, v in quant["int8"]["metrics"].items()})
        metrics["cpu_latency_ms"] = quant["int8"]["latency_ms"]
    else:
        metrics.update({f"test_{k}": v for k, v in result["text_metrics"].items()})
        if quant and variant == "merged":
            metrics["cpu_latency_ms"] = quant["fp32"]["latency_ms"]
    if quant:
        metrics["int8_speedup"] = quant.get("speedup")
        for k, v in quant["delta"].items():
            metrics[f"int8_delta_{k}"] = v
    # The registry stores numbers; what was not measured (GPU-seconds on a CPU) is left out.
    return {k: v for k, v in metrics.items() if v is not None}


def register_job(
    ws: Workspace,
    job_id: str,
    model_name: str,
    *,
    actor: User,
    variant: str = "weights",
    comment: str | None = None,
) -> Any:
    """Register a finished fine-tuning job's result (see `register_run`).

    Raises:
        NotFound: no such job. InvalidInput: the job has not finished well.
        PermissionDenied: the actor did not start it and is not an admin.
    """
    from core import auth, training_jobs

    status = training_jobs.read_progress(ws, job_id, with_result=False)
    if status.state != training_jobs.DONE:
        raise InvalidInput(
            f"fine-tuning job {job_id} has not finished successfully ({status.state}); wait "
            "for it to finish before registering"
        )
    if status.actor != actor.name and actor.role is not auth.Role.ADMIN:
        raise PermissionDenied(
            f"fine-tuning job {job_id} was started by {status.actor!r}; only they (or an admin) "
            "can register its model"
        )
    folder = training_jobs.job_folder(ws, job_id) / training_jobs.RUN_DIR
    version = register_run(ws, folder, model_name, actor=actor, variant=variant, comment=comment)
    training_jobs.write_json_atomic(
        training_jobs.job_folder(ws, job_id) / training_jobs.REGISTERED_FILE,
        dict(training_jobs.registered_summary(version), variant=variant),
    )
    return version


# --- loading a registered text model (serving, evaluation) ----------------------------------


class TextModel:
    """A registered fine-tuned model, loaded once, answering prompts.

    `generate` is thread-safe (one generation at a time per loaded model),
    so a server can share one instance between request threads.
    """

    def __init__(self, model: Any, tokenizer: Any, manifest: Mapping[str, Any], device: str,
                 max_new_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = dict(manifest)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.format = PromptFormat(manifest["prompt_format"], manifest["kind"])
        self.max_prompts = MAX_SERVED_PROMPTS
        self._lock = threading.Lock()

    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """One greedy generation per prompt.

        Raises:
            InvalidInput: a prompt that is not a non-empty text, or too many prompts.
        """
        prompts = list(prompts)
        if len(prompts) > MAX_SERVED_PROMPTS:
            raise InvalidInput(
                f"{len(prompts)} prompts in one request; a text model takes at most "
                f"{MAX_SERVED_PROMPTS}: split them into batches"
            )
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise InvalidInput(f"prompt {i} must be a non-empty text; got {prompt!r}")
        with self._lock:
            return generate_texts(
                self.model, self.tokenizer, self.format, prompts,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                max_length=self.manifest.get("context_length"), device=self.device,
            )

    def __call__(self, prompts: list[str]) -> list[str]:
        return self.generate(prompts)


@contextlib.contextmanager
def _named_folder(files: Mapping[str, Path]) -> Iterator[Path]:
    """A temporary folder where each stored file appears under its name (symlinks)."""
    with tempfile.TemporaryDirectory(prefix="pond-model-") as tmp:
        root = Path(tmp)
        for name, path in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(path).resolve(), target)
        yield root


def is_text_model(files: Mapping[str, Any] | Sequence[str]) -> bool:
    """Whether a version's files are a model Pond fine-tuned (it has the manifest)."""
    return MANIFEST in files


def load_text_model(
    source: Mapping[str, str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    device: str | None = None,
) -> TextModel:
    """Load a registered fine-tuned model for generation.

    Args:
        source: a version's files (name → path, from `registry.version_files`)
            or a folder holding them under their names.
        device: "cpu" or "cuda"; default CUDA when there is one, except for the
            int8 variant, which is a CPU model.

    Returns:
        The loaded model.

    Raises:
        PondError: the manifest is missing, or an adapter's base model is gone
            or changed since training.
    """
    import torch

    if isinstance(source, Mapping):
        files = {k: Path(v) for k, v in source.items()}
        with _named_folder(files) as folder:
            return load_text_model(folder, device=device)
    folder = Path(source)
    manifest = _read_json(folder / MANIFEST)
    if not manifest:
        raise PondError(f"{folder} is not a model Pond fine-tuned (no {MANIFEST})")
    int8 = manifest.get("quantize") == "dynamic_int8"
    device = device or ("cuda" if torch.cuda.is_available() and not int8 else "cpu")
    kind = manifest["kind"]
    if manifest["weights"] == "adapter":
        import peft

        base = manifest["base_model"]
        base_path = Path(base["path"])
        if not (base_path / "config.json").is_file():
            raise PondError(
                f"the base model of this adapter is missing: {base['reference']!r} was at "
                f"{base_path}. Put it back there, or register the merged variant instead"
            )
        found = model_sha256(base_path)
        if found != base["sha256"]:
            raise PondError(
                f"the base model at {base_path} changed since the adapter was trained (sha256 "
                f"{found[:12]}…, expected {base['sha256'][:12]}…); restore it or register the "
                "merged variant"
            )
        model = _load_weights(base_path, kind, _dtype("float32"), base["reference"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = peft.PeftModel.from_pretrained(model, str(folder / "adapter"))
        model = model.merge_and_unload()  # one matmul per layer at inference instead of three
    else:
        model = _load_weights(folder / "model", kind, _dtype("float32"), str(folder))
    model.config.use_cache = True
    if int8:
        model = quantize_int8(model)
    else:
        model = model.to(device)
    tokenizer, _ = load_tokenizer(folder / "tokenizer", kind=kind)
    generation = _read_json(folder / "generation_config.json") or {}
    max_new = int(generation.get("max_new_tokens") or manifest.get("max_new_tokens") or 64)
    return TextModel(model.eval(), tokenizer, manifest, device, max_new)


def generator_for(ws: Workspace, model_ref: str) -> Callable[[list[str]], list[str]]:
    """A `generate(prompts)` function for a registered text model, e.g. for
    `evaluation.evaluate_text(..., generate=generator_for(ws, "writer:2"))`.

    Raises:
        NotFound: no such model or version. PondError: not a fine-tuned text model.
    """
    from core import registry

    version = registry.resolve(ws, model_ref)
    files = registry.version_files(ws, version.model, version.version)
    if not is_text_model(files):
        raise PondError(f"model {version.ref} is not a text model Pond fine-tuned")
    return load_text_model(files).generate


def history_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Loss points as rows for a chart: one per point, x = tokens seen across trials."""
    rows = []
    for point in history:
        for series in ("train_loss", "val_loss"):
            value = point.get(series)
            if value is not None:
                rows.append({"trial": point["trial"], "step": point["step"],
                             "elapsed_s": point["elapsed_s"],
                             "series": f"trial {point['trial']} {series.replace('_', ' ')}",
                             "loss": value})
    return rows


def model_flops_per_token(n_params: int, method: str) -> float:
    """Training FLOPs per token: 6·N for full fine-tuning, 4·N for LoRA (a frozen base
    skips the weight-gradient matmuls), attention's share left out as usual."""
    return (6.0 if method == "full" else 4.0) * n_params


def peak_flops(gpu_name: str) -> float | None:
    """The bf16 dense peak of a known GPU, for model FLOPs utilisation."""
    for key, value in PEAK_BF16_FLOPS.items():
        if key in gpu_name:
            return value
    return None


__all__ = [
    "BaseModel", "FinetuneConfig", "FinetuneResult", "Hardware", "MemoryEstimate",
    "OutOfMemory", "Plan", "Progress", "TextModel", "TrialSummary", "check_config",
    "estimate_memory", "export_merged", "finetune_dataset", "finetune_frame", "generator_for",
    "hardware_report", "list_base_models", "load_result", "load_text_model", "plan",
    "prepare_rows", "register_job", "register_run", "resolve_base_model", "start_finetune",
]
