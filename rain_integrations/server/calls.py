"""From an OpenAI-shaped request to a search ready to start: prompt ids, config, generator.

Everything a request can get wrong is found here, before a search slot is
taken or a response started, and reported as a 400 that names the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from rain_integrations.server.errors import APIError, bad_request, from_rain_error
from rain_integrations.server.generators import Generators
from rain_integrations.server.limits import ServerLimits
from rain_integrations.server.schemas import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
)
from rain_search.config import RainConfig
from rain_search.errors import ConfigError, RainError
from rain_search.search import RainGenerator, RainStream
from rain_search.untrusted import Segment, encode_segments

T = TypeVar("T")
CONFIG_FIELDS = frozenset(RainConfig.model_fields)
RAIN_KEYS = CONFIG_FIELDS | {"preset", "template"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass
class Prepared:
    """A checked request and its search, built but not started (it starts once it has a slot).

    A built search does nothing and holds nothing until its first step is
    asked for: its time budget starts then, so waiting in the queue is not
    charged. ``own_budget`` says the request set ``rain.timeout`` or
    ``rain.max_forward_calls`` itself, so an answer cut by a budget is what
    it asked for; otherwise only the server's timeout can cut it.
    """

    stream: RainStream
    prompt_tokens: int
    own_budget: bool


def prepare(
    request: ChatRequest | CompletionRequest, generators: Generators, limits: ServerLimits
) -> Prepared:
    """Check ``request`` and build its search; a 400 :class:`APIError` names what is wrong.

    One pass: the request's own fields and sizes are checked here, what the
    search needs (the judge's settings, the context window) by the generator
    as it builds the search (:meth:`~rain_search.search.RainGenerator.stream_ids`),
    never twice.
    """
    refuse_unsupported(request)
    if request.model != generators.model_name:
        raise APIError(
            404,
            f"model {request.model!r} is not served here; this server serves "
            f"{generators.model_name!r} (GET /v1/models lists it)",
            param="model",
            code="model_not_found",
        )
    config, judge, own_budget = search_config(request, generators.base().config, limits)
    generator = generators.for_judge(*judge)
    if isinstance(request, ChatRequest):
        where, messages = "messages", chat_messages(request.messages, limits)
        ids, question = safely(lambda: generator.encode(messages, None), where)
    else:
        where, question = "prompt", completion_prompt(request, limits)
        ids = safely(lambda: text_ids(generator, question), where)
    if len(ids) > limits.max_prompt_tokens:
        raise bad_request(
            f"the prompt is {len(ids)} tokens; this server takes at most "
            f"{limits.max_prompt_tokens}; shorten it",
            where,
            "context_length_exceeded",
        )
    stream = safely(lambda: generator.stream_ids(ids, question, config=config), where)
    return Prepared(stream=stream, prompt_tokens=len(ids), own_budget=own_budget)


def too_long(chars: int, limits: ServerLimits, where: str) -> APIError:
    """A prompt refused by its length in characters, before it is tokenised."""
    return bad_request(
        f"the prompt is {chars} characters; this server takes at most {limits.prompt_chars} "
        f"(and {limits.max_prompt_tokens} tokens); shorten it",
        where,
        "context_length_exceeded",
    )


def safely(work: Callable[[], T], param: str) -> T:
    """``work()``, with a :class:`RainError` from bad input turned into a 400 on ``param``."""
    try:
        return work()
    except RainError as exc:
        raise from_rain_error(exc, param) from exc


def refuse_unsupported(request: ChatRequest | CompletionRequest) -> None:
    """A 400 for every OpenAI option RAIN cannot honour, set to anything but neutral."""
    problems: list[tuple[str, bool, str]] = [
        ("n", request.n not in (None, 1), "RAIN returns one answer per request; send n=1"),
        ("logprobs", bool(request.logprobs), "RAIN chooses tokens by tree search"),
        ("top_logprobs", request.top_logprobs is not None, "RAIN chooses tokens by tree search"),
        ("top_p", request.top_p not in (None, 1, 1.0), "use temperature or rain.top_k"),
        ("presence_penalty", bool(request.presence_penalty), "RAIN has no penalties"),
        ("frequency_penalty", bool(request.frequency_penalty), "RAIN has no penalties"),
        ("logit_bias", bool(request.logit_bias), "RAIN has no logit bias"),
    ]
    if isinstance(request, ChatRequest):
        problems += [
            ("tools", bool(request.tools), "the RAIN server answers in text only"),
            ("functions", bool(request.functions), "the RAIN server answers in text only"),
            ("tool_choice", request.tool_choice not in (None, "none"), "there are no tools"),
            ("function_call", request.function_call not in (None, "none"), "there are no tools"),
            (
                "response_format",
                (request.response_format or {}).get("type", "text") != "text",
                "the RAIN server answers in plain text only",
            ),
        ]
    if isinstance(request, CompletionRequest):
        problems += [
            ("echo", bool(request.echo), "the prompt is not echoed"),
            ("suffix", bool(request.suffix), "RAIN does not fill in the middle"),
            ("best_of", request.best_of not in (None, 1), "RAIN returns one answer"),
        ]
    for param, refused, why in problems:
        if refused:
            raise bad_request(
                f"{param!r} is not supported by the RAIN server ({why}); remove it",
                param,
                "unsupported_parameter",
            )


def search_config(
    request: ChatRequest | CompletionRequest, base: RainConfig, limits: ServerLimits
) -> tuple[RainConfig, tuple[str | None, str | None, bool | None], bool]:
    """The request's RainConfig, within the server's limits, the judge it asks for, and
    whether it set a budget of its own (``timeout`` or ``max_forward_calls``).

    OpenAI's ``max_tokens``, ``temperature``, ``stop`` and ``seed`` set the
    RainConfig fields of the same meaning; RAIN's own settings come under
    ``rain`` (``preset``, ``template``, any RainConfig field). A field set in
    both places is an error rather than a silent choice.
    """
    rain, template, preset = rain_object(request.rain)
    if preset is not None:
        base = safely(lambda: RainConfig.preset(preset), "rain.preset")
    top, names = openai_fields(request, base)
    clash = sorted(set(top) & set(rain))
    if clash:
        raise bad_request(
            f"{names[clash[0]]!r} and 'rain.{clash[0]}' both set {clash[0]}; pass one",
            f"rain.{clash[0]}",
        )
    names.update({field: f"rain.{field}" for field in rain})
    overrides = {**rain, **top}
    own_budget = any(rain.get(name) is not None for name in ("timeout", "max_forward_calls"))
    if limits.timeout is not None and overrides.get("timeout") is None:
        overrides["timeout"] = limits.timeout
    config = merged(base, overrides, names)
    config = within_limits(config, "max_new_tokens" in overrides, names, limits)
    check_stops([s for s in config.stop_sequences if s not in base.stop_sequences], names)
    return config, (template, rain.get("votes"), rain.get("swap_labels")), own_budget


def rain_object(rain: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """The ``rain`` object as RainConfig fields, a template name and a preset name."""
    fields = dict(rain)
    unknown = sorted(set(fields) - RAIN_KEYS)
    if unknown:
        raise bad_request(
            f"unknown RAIN setting(s) {unknown}; 'rain' takes preset, template and RainConfig "
            "fields such as max_iterations, num_children, c_puct, timeout",
            f"rain.{unknown[0]}",
            "unknown_parameter",
        )
    names = {key: fields.pop(key, None) for key in ("template", "preset")}
    for key, value in names.items():
        if value is not None and not isinstance(value, str):
            raise bad_request(f"rain.{key} must be a name, got {value!r}", f"rain.{key}")
    return fields, names["template"], names["preset"]


def within_limits(
    config: RainConfig, asked_tokens: bool, names: Mapping[str, str], limits: ServerLimits
) -> RainConfig:
    """``config`` checked against the server's limits; a preset's length is capped quietly."""
    if config.max_new_tokens > limits.max_tokens:
        if asked_tokens:
            raise bad_request(
                f"{names['max_new_tokens']} is {config.max_new_tokens}; this server allows at "
                f"most {limits.max_tokens} tokens per answer",
                names["max_new_tokens"],
            )
        config = config.merged(max_new_tokens=limits.max_tokens)
    if limits.timeout is not None and (config.timeout or 0) > limits.timeout:
        raise bad_request(
            f"rain.timeout is {config.timeout:g} s; this server allows at most {limits.timeout:g}",
            "rain.timeout",
        )
    return config


def openai_fields(
    request: ChatRequest | CompletionRequest, base: RainConfig
) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's own fields as RainConfig overrides, and the request field each came from."""
    top: dict[str, Any] = {}
    names: dict[str, str] = {}
    tokens = [("max_tokens", request.max_tokens)]
    if isinstance(request, ChatRequest):
        tokens.append(("max_completion_tokens", request.max_completion_tokens))
    given = [(name, value) for name, value in tokens if value is not None]
    if len({value for _, value in given}) > 1:
        raise bad_request(
            "max_tokens and max_completion_tokens differ; pass one", "max_completion_tokens"
        )
    if given:
        names["max_new_tokens"], top["max_new_tokens"] = given[0]
    if request.temperature is not None:
        names["temperature"], top["temperature"] = "temperature", request.temperature
    if request.seed is not None:
        names["seed"], top["seed"] = "seed", request.seed
    if request.stop:
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop)
        names["stop_sequences"] = "stop"
        top["stop_sequences"] = tuple(base.stop_sequences) + tuple(stops)
    names.setdefault("max_new_tokens", "max_tokens")
    return top, names


MAX_STOPS = 4
"""Stop sequences a request may send, as OpenAI allows."""
MAX_STOP_CHARS = 64
"""Characters in one stop sequence: each is searched for in the answer at every step."""


def check_stops(stops: list[str], names: Mapping[str, str]) -> None:
    """At most :data:`MAX_STOPS` sequences of at most :data:`MAX_STOP_CHARS` characters."""
    name = names.get("stop_sequences", "stop")
    if len(stops) > MAX_STOPS:
        raise bad_request(
            f"{name!r} has {len(stops)} sequences; at most {MAX_STOPS} are allowed, as in "
            "OpenAI's API",
            name,
        )
    for stop in stops:
        if len(stop) > MAX_STOP_CHARS:
            raise bad_request(
                f"a stop sequence in {name!r} is {len(stop)} characters; at most "
                f"{MAX_STOP_CHARS} are allowed",
                name,
            )


def merged(base: RainConfig, overrides: Mapping[str, Any], names: Mapping[str, str]) -> RainConfig:
    """``base`` with ``overrides``; an invalid value is a 400 naming its request field.

    Values are read strictly, as JSON types: ``"12"`` is not a number and
    ``1`` is not ``true``, so a client's mistake is named, not guessed at.
    """
    strict_types(base, overrides, names)
    try:
        return base.merged(**overrides)
    except ConfigError as exc:
        field = _failed_field(exc)
        raise bad_request(str(exc), names.get(field, f"rain.{field}") if field else "rain") from exc


def strict_types(base: RainConfig, overrides: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """A 400 when an override has the wrong JSON type for its RainConfig field."""
    values = {**base.model_dump(mode="json"), **overrides}
    try:
        RainConfig.model_validate_json(json.dumps(values), strict=True)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field in overrides and error["type"].endswith("_type"):
                name = names.get(field, f"rain.{field}")
                raise bad_request(
                    f"{name}: {error['msg']} (got {overrides[field]!r}); send a JSON "
                    f"{kind_of(error['type'])}",
                    name,
                ) from exc
    except ValueError:  # not JSON at all (NaN and the like): the lax check names it
        return


def kind_of(error_type: str) -> str:
    """``int_type`` -> ``integer``: the JSON type a strict check wanted."""
    kind = error_type.removesuffix("_type")
    return {"int": "integer", "bool": "boolean", "str": "string", "float": "number"}.get(kind, kind)


def _failed_field(exc: ConfigError) -> str | None:
    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.errors():
        loc = cause.errors()[0]["loc"]
        return str(loc[0]) if loc else None
    return None


def chat_messages(messages: list[ChatMessage], limits: ServerLimits) -> list[dict[str, str]]:
    """OpenAI chat messages as role/content pairs for the model's chat template.

    Their number and length are checked first: tokenising megabytes of text,
    or thousands of messages, costs seconds before the token limit can refuse it.
    """
    if len(messages) > limits.max_messages:
        raise bad_request(
            f"the request has {len(messages)} messages; this server takes at most "
            f"{limits.max_messages}; send fewer",
            "messages",
            "context_length_exceeded",
        )
    out, chars = [], 0
    for i, message in enumerate(messages):
        if message.role not in ROLES or message.tool_calls:
            raise bad_request(
                f"messages[{i}] is a {message.role!r} message with tool calls or results; the "
                "RAIN server supports system, developer, user and assistant text messages only",
                f"messages.{i}.role",
                "unsupported_parameter",
            )
        out.append({"role": ROLES[message.role], "content": message_text(message, i)})
        chars += len(out[-1]["content"])
        if chars > limits.prompt_chars:
            raise too_long(chars, limits, "messages")
    return out


def message_text(message: ChatMessage, index: int) -> str:
    """A message's content as one text; a non-text part (an image, audio) is refused."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"messages[{index}] has a {part.type!r} content part; this model reads text only",
                f"messages.{index}.content",
                "unsupported_parameter",
            )
        parts.append(part.text)
    return "".join(parts)


def completion_prompt(request: CompletionRequest, limits: ServerLimits) -> str:
    """The one prompt of a completions request (refused untokenised when too long)."""
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if len(prompts) != 1:
        raise bad_request(
            f"'prompt' holds {len(prompts)} prompts; the RAIN server answers one per request",
            "prompt",
            "unsupported_parameter",
        )
    if not prompts[0].strip():
        raise bad_request("'prompt' is empty; give the text to continue", "prompt")
    if len(prompts[0]) > limits.prompt_chars:
        raise too_long(len(prompts[0]), limits, "prompt")
    return prompts[0]


def text_ids(generator: RainGenerator, text: str) -> list[int]:
    """A completions prompt is continued as raw text: no chat template, contents stay text."""
    return encode_segments(generator.tokenizer, [Segment(text, False)], add_special_tokens=True)
