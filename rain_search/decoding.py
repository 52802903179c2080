"""RAIN as a ``transformers`` decoding strategy: ``model.generate(custom_generate=...)``.

``transformers`` 5.x hands ``generate``'s decoding loop to a function given as
``custom_generate=``: either the function itself (:func:`rain_generate`), or a
folder holding ``custom_generate/generate.py`` (:data:`CUSTOM_GENERATE_DIR`,
loaded with ``trust_remote_code=True``). The folder form is what reaches code
that only forwards ``generate`` keywords: ``pipeline("text-generation")``,
LangChain's ``HuggingFacePipeline`` (``pipeline_kwargs``) and LlamaIndex's
``HuggingFaceLLM`` (``generate_kwargs``).

``generate``'s own arguments are honoured where RAIN has a meaning for them
(length, EOS ids, stop strings, sampling temperature, ``max_time``, a streamer,
``return_dict_in_generate``); any other one that would change the output is
refused with an error naming it, never silently ignored. A batch is answered
row by row, each row exactly as alone.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import AutoTokenizer, GenerationConfig, GenerationMixin
from transformers.generation import (
    EosTokenCriteria,
    GenerateDecoderOnlyOutput,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from rain_search.config import RainConfig
from rain_search.errors import ConfigError, ModelLoadError, PromptError
from rain_search.knobs import UNSUPPORTED, settings_asked
from rain_search.result import RainResult

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from transformers.generation.streamers import BaseStreamer

    from rain_search.search import RainGenerator
    from rain_search.stream import RainStream

CUSTOM_GENERATE_DIR = str(Path(__file__).parent / "hub")
"""A folder for ``custom_generate=`` (with ``trust_remote_code=True``): RAIN by path."""


# Criteria and processors that ``generate`` builds from settings RAIN honours itself.
HONOURED_CRITERIA = (MaxLengthCriteria, EosTokenCriteria, StopStringCriteria, MaxTimeCriteria)
HONOURED_PROCESSORS = (TemperatureLogitsWarper, TopKLogitsWarper)
# What ``generate`` passes through to the model's forward: harmless for RAIN, which
# builds its own inputs and cache.
MODEL_INPUTS = {"attention_mask", "position_ids", "use_cache", "logits_to_keep", "cache_position"}
# Arguments of ``generate`` itself that reach the folder form as None when unused.
GENERATE_ONLY = ("prefix_allowed_tokens_fn", "assistant_model", "negative_prompt_ids")


@dataclass
class RainGenerateOutput(GenerateDecoderOnlyOutput):
    """``generate``'s usual output plus each row's :class:`RainResult` (search statistics)."""

    rain_results: list[RainResult] | None = None


@torch.no_grad()
def rain_generate(
    model: PreTrainedModel,
    input_ids: torch.Tensor | None = None,
    logits_processor: Sequence[Any] | None = None,
    stopping_criteria: Sequence[Any] | None = None,
    generation_config: GenerationConfig | None = None,
    synced_gpus: bool | None = False,
    streamer: BaseStreamer | None = None,
    *,
    inputs: torch.Tensor | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    rain_config: RainConfig | str | Mapping[str, Any] | None = None,
    rain_evaluator: Any = None,
    rain_template: Any = None,
    rain_embedder: Any = "minilm",
    rain_tokenizer: PreTrainedTokenizerBase | None = None,
    rain_prompt: str | Sequence[str] | None = None,
    rain_streamer: BaseStreamer | None = None,
    **kwargs: Any,
) -> torch.Tensor | RainGenerateOutput:
    """Answer each row of ``input_ids`` with the RAIN tree search.

    ``rain_config`` (a :class:`RainConfig`, preset name or dict of fields) sets
    the search; ``rain_evaluator``, ``rain_template`` and ``rain_embedder`` are
    :class:`~rain_search.RainGenerator`'s ``evaluator``, ``template`` and
    ``embedder``. ``rain_prompt`` is the question the judge reads (one per row;
    default: the last user message, recovered through the chat template).

    ``transformers`` does not hand ``tokenizer=`` or ``streamer=`` to a
    *callable* ``custom_generate`` (it does to the folder form), so pass them as
    ``rain_tokenizer=`` and ``rain_streamer=`` there; without a tokenizer, the
    model's own is loaded from ``model.name_or_path``.
    """
    ids = input_ids if input_ids is not None else inputs
    if ids is None or ids.dim() != 2 or ids.shape[1] == 0:
        raise PromptError("RAIN needs a non-empty batch of prompt token ids (input_ids)")
    kwargs.pop("use_cache", None)  # RAIN always caches; generate adds it in the callable form
    # generate's own merge of the given config, the model's defaults and the keywords
    prepare = cast(GenerationMixin, model)._prepare_generation_config  # type: ignore[misc]
    generation_config, model_kwargs = prepare(generation_config, **kwargs)
    _refuse_unsupported(generation_config, model_kwargs, logits_processor, stopping_criteria)
    if synced_gpus:
        raise ConfigError("synced_gpus (DeepSpeed ZeRO-3 / FSDP) is not supported by RAIN")
    tokenizer = tokenizer or rain_tokenizer or model_tokenizer(model)
    streamer = streamer or rain_streamer
    if streamer is not None and ids.shape[0] > 1:
        raise ConfigError("a streamer takes one row; call generate one prompt at a time")
    mask = model_kwargs.get("attention_mask")
    rows = [_unpadded(ids[row], None if mask is None else mask[row]) for row in range(len(ids))]
    prompts = _judge_prompts(rain_prompt, rows, tokenizer)
    config = _search_config(rain_config, generation_config, ids.shape[1])
    generator = cached_generator(
        model,
        tokenizer,
        _eos_ids(generation_config),
        evaluator=rain_evaluator,
        template=rain_template,
        embedder=rain_embedder,
    )
    # every row's search starts before any is read, so the rows share forward calls
    streams = [
        generator.stream_ids(row, prompt, config=config).start()
        for row, prompt in zip(rows, prompts, strict=True)
    ]
    try:
        results = [
            _answer(stream, row, streamer) for stream, row in zip(streams, rows, strict=True)
        ]
    finally:
        for stream in streams:  # an error in one row stops the others
            stream.close()
    sequences = _sequences(ids, results, generation_config.pad_token_id, tokenizer)
    if generation_config.return_dict_in_generate:
        return RainGenerateOutput(sequences=sequences, rain_results=results)  # type: ignore[arg-type]
    return sequences


def _answer(stream: RainStream, prompt_ids: list[int], streamer: BaseStreamer | None) -> RainResult:
    """One row's search read to its end, each committed token set put to the streamer."""
    if streamer is not None:
        streamer.put(torch.tensor([prompt_ids]))
    try:
        for step in stream:
            if streamer is not None:
                streamer.put(torch.tensor(step.token_ids, dtype=torch.long))
    finally:
        stream.close()
        if streamer is not None:
            streamer.end()
    assert stream.result is not None
    return stream.result


# -- what generate asked for -----------------------------------------------------------


def _refuse_unsupported(
    generation_config: GenerationConfig,
    model_kwargs: Mapping[str, Any],
    logits_processor: Sequence[Any] | None,
    stopping_criteria: Sequence[Any] | None,
) -> None:
    """Raise on any setting that would change the output but that RAIN cannot apply."""
    for name, value in settings_asked(generation_config).items():
        raise ConfigError(
            f"{name}={value!r} is not supported by RAIN's tree search: "
            f"{UNSUPPORTED[name].instead}; leave {name} unset, or set it in the model's "
            "generation_config to its neutral value"
        )
    for name in set(model_kwargs) - MODEL_INPUTS:
        value = model_kwargs[name]
        if value is None or (name == "past_key_values" and _empty_cache(value)):
            continue
        if name in GENERATE_ONLY or name == "negative_prompt_attention_mask":
            raise ConfigError(f"generate's {name} is not supported by RAIN; leave it unset")
        raise ConfigError(
            f"RAIN does not pass {name!r} to the model; remove it from the generate call "
            "(RAIN builds its own inputs and key/value cache)"
        )
    for item in logits_processor or ():
        if not isinstance(item, HONOURED_PROCESSORS):
            raise ConfigError(
                f"logits processor {type(item).__name__} is not applied by RAIN's tree search; "
                "remove it (or the generate argument that adds it)"
            )
    for item in stopping_criteria or ():
        if not isinstance(item, HONOURED_CRITERIA):
            raise ConfigError(
                f"stopping criterion {type(item).__name__} is not checked by RAIN's tree "
                "search; use eos_token_id, stop_strings, max_new_tokens or max_time"
            )


def _empty_cache(cache: Any) -> bool:
    length = getattr(cache, "get_seq_length", None)
    return callable(length) and length() == 0


def _search_config(
    spec: RainConfig | str | Mapping[str, Any] | None,
    generation_config: GenerationConfig,
    prompt_tokens: int,
) -> RainConfig:
    """The RAIN configuration, with what generate's config says about stops and sampling."""
    if spec is None or isinstance(spec, RainConfig):
        config = spec or RainConfig()
    elif isinstance(spec, str):
        config = RainConfig.preset(spec)
    elif isinstance(spec, Mapping):
        config = RainConfig.create(**spec)
    else:
        raise ConfigError(
            f"rain_config must be a RainConfig, a preset name or a dict, got {type(spec).__name__}"
        )
    overrides: dict[str, Any] = {"max_new_tokens": _budget(generation_config, prompt_tokens)}
    stops = generation_config.stop_strings
    if stops:
        stops = [stops] if isinstance(stops, str) else list(stops)
        overrides["stop_sequences"] = config.stop_sequences + tuple(stops)
    if generation_config.do_sample:  # generate's sampling settings drive candidate sampling
        if generation_config.temperature is not None:
            overrides["temperature"] = generation_config.temperature
        if generation_config.top_k:
            overrides["top_k"] = generation_config.top_k
    if generation_config.max_time is not None:
        overrides["timeout"] = generation_config.max_time
    return config.merged(**overrides)


def _budget(generation_config: GenerationConfig, prompt_tokens: int) -> int:
    """New tokens allowed: ``max_new_tokens``, else what ``max_length`` leaves (generate's rule)."""
    if generation_config.max_new_tokens is not None:
        return int(generation_config.max_new_tokens)
    budget = int(generation_config.max_length or 20) - prompt_tokens
    if budget < 1:
        raise PromptError(
            f"max_length={generation_config.max_length} leaves no room after the "
            f"{prompt_tokens}-token prompt; pass max_new_tokens"
        )
    return budget


def _eos_ids(generation_config: GenerationConfig) -> frozenset[int] | None:
    eos = generation_config.eos_token_id
    if eos is None:
        return None
    return frozenset([eos] if isinstance(eos, int) else (int(i) for i in eos))


# -- prompts and outputs ----------------------------------------------------------------


def _unpadded(row: torch.Tensor, mask: torch.Tensor | None) -> list[int]:
    """A row's real tokens: left padding (mask 0) removed."""
    ids = row.tolist()
    if mask is None:
        return ids
    return [token for token, keep in zip(ids, mask.tolist(), strict=True) if keep]


def _judge_prompts(
    given: str | Sequence[str] | None, rows: list[list[int]], tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    if given is None:
        return [user_message(tokenizer, row) for row in rows]
    prompts = [given] if isinstance(given, str) else list(given)
    if len(prompts) != len(rows):
        raise PromptError(f"rain_prompt has {len(prompts)} entries for {len(rows)} rows")
    return prompts


SENTINEL = "\u2063RAIN\u2063"


def user_message(tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int]) -> str:
    """The last user message inside a chat-formatted prompt, for the judge to read.

    The chat template is rendered around a marker to learn what it writes
    before a user turn and after it; a prompt that does not follow the
    template is given to the judge whole (special tokens dropped).
    """
    text = str(tokenizer.decode(list(prompt_ids)))
    plain = str(tokenizer.decode(list(prompt_ids), skip_special_tokens=True)).strip()
    if not getattr(tokenizer, "chat_template", None):
        return plain
    try:
        before_a, after = _around_marker(tokenizer, None)
        before_b, _ = _around_marker(tokenizer, "S")
    except Exception:  # a template that needs more than plain turns: read the whole prompt
        return plain
    header = _common_suffix(before_a, before_b)
    if not header or not text.endswith(after) or header not in text:
        return plain
    body = text[: len(text) - len(after)]
    return body[body.rindex(header) + len(header) :].strip() or plain


def _around_marker(tokenizer: PreTrainedTokenizerBase, system: str | None) -> tuple[str, str]:
    messages = [{"role": "user", "content": SENTINEL}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, _, after = str(rendered).partition(SENTINEL)
    return before, after


def _common_suffix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[-1 - size] == b[-1 - size]:
        size += 1
    return a[len(a) - size :]


def _sequences(
    ids: torch.Tensor,
    results: list[RainResult],
    pad_token_id: int | None,
    tokenizer: PreTrainedTokenizerBase,
) -> torch.Tensor:
    """Prompt rows followed by their answers, right-padded to one length (as generate does).

    An answer that met a stop string ends where its visible text ends (the
    token the stop string starts in is the last), not after the stop string.
    """
    answers = [list(result.token_ids) for result in results]
    width = max(len(answer) for answer in answers)
    pad = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
    if pad is None and any(len(a) < width for a in answers):
        raise ConfigError("rows ended at different lengths and there is no pad_token_id to fill")
    tail = [answer + [pad or 0] * (width - len(answer)) for answer in answers]
    return torch.cat([ids, torch.tensor(tail, dtype=ids.dtype, device=ids.device)], dim=1)


# -- one generator per model and judge ---------------------------------------------------

# Per model: key -> (generator, the objects whose ids are in the key, kept alive).
_generators: weakref.WeakKeyDictionary[
    Any, dict[tuple[Any, ...], tuple[RainGenerator, tuple[object, ...]]]
] = weakref.WeakKeyDictionary()
_tokenizers: weakref.WeakKeyDictionary[Any, PreTrainedTokenizerBase] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def cached_generator(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eos_ids: frozenset[int] | None,
    **parts: Any,
) -> RainGenerator:
    """The :class:`RainGenerator` for this model and judge, built once and reused.

    Building one reads the evaluation template and the tokenizer's punctuation;
    reusing it keeps the judge's caches warm across ``generate`` calls.
    """
    from rain_search.search import RainGenerator

    key = (id(tokenizer), eos_ids, *(_identity(value) for value in parts.values()))
    with _lock:
        per_model = _generators.setdefault(model, {})
        if key not in per_model:
            generator = RainGenerator(model, tokenizer, **parts)
            if eos_ids:
                generator.backend.eos_token_ids = eos_ids
            per_model[key] = (generator, (tokenizer, *parts.values()))
        return per_model[key][0]


def _identity(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else id(value)


def model_tokenizer(model: PreTrainedModel) -> PreTrainedTokenizerBase:
    """The tokenizer saved with ``model`` (loaded once), for a call that passed none."""
    with _lock:
        if model in _tokenizers:
            return _tokenizers[model]
        source = getattr(model, "name_or_path", "")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"RAIN needs the model's tokenizer and none could be loaded from "
                f"{source!r} ({str(exc).splitlines()[0]}); pass rain_tokenizer=tokenizer"
            ) from exc
        _tokenizers[model] = tokenizer
        return tokenizer
