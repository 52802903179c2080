"""What tells two RAIN adapters' answers apart: the key of a framework's answer cache.

LangChain's LLM cache stores an answer under the prompt and the model's
identifying parameters; two models whose parameters print alike share answers.
For RAIN the answer depends on the model, every search setting, the judge
(and its template), the system message and the embedder, so all of them are
here, each described by something that is the same in every process. A judge
with no such description (a lambda, a function defined inside another, an
evaluator object without an ``identity``) cannot be cached safely:
:func:`check_cacheable` refuses it with an error that says how to name it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rain_search.embeddings import HiddenStateEmbedder, MiniLMEmbedder
from rain_search.errors import ConfigError
from rain_search.evaluators import evaluator_identity, qualified_name
from rain_search.templates import load_template, template_identity

if TYPE_CHECKING:
    from rain_integrations._params import RainParams

UNNAMED = "unnamed"
"""The description of a judge that has no stable identity (never a cache key)."""


def identifying_params(params: RainParams) -> dict[str, Any]:
    """Everything that changes what ``params`` answers, as plain, stable values."""
    return {
        "model_name": params.model_name,
        "judge": judge_identity(params) or f"{UNNAMED} {judge_name(params)}",
        "embedder": embedder_identity(params),
        "system": params.system,
        **params.config.model_dump(),
    }


def _ready(params: RainParams) -> bool:
    """A generator handed in by the user (not built from these fields) judges with its own."""
    return params.generator is not None and not params._built_here


def judge_identity(params: RainParams) -> str | None:
    """The judge, by template content or by name; None when it has no stable name."""
    if _ready(params):
        return evaluator_identity(params.generator.evaluator)
    spec = params.evaluator
    if spec is None or spec == "self":
        template = params.template or load_template("harmless")
        return f"SelfEvaluator({template_identity(template)}, votes={params.config.votes})"
    if callable(spec) and not hasattr(spec, "score"):
        return qualified_name(spec)
    return evaluator_identity(spec)


def judge_name(params: RainParams) -> str:
    """How to name the judge in an error message."""
    spec = params.generator.evaluator if _ready(params) else params.evaluator
    return repr(getattr(spec, "fn", spec))


def embedder_identity(params: RainParams) -> str:
    spec = params.generator.embedder if _ready(params) else params.embedder
    if spec is None or isinstance(spec, MiniLMEmbedder):
        return "minilm"
    if isinstance(spec, HiddenStateEmbedder):
        return "hidden"
    if isinstance(spec, str):
        return spec
    return getattr(spec, "identity", None) or qualified_name(type(spec)) or UNNAMED


def check_cacheable(params: RainParams) -> None:
    """Raise when an answer cache is about to key on a judge that has no stable name."""
    if judge_identity(params) is None:
        raise ConfigError(
            f"an LLM cache is set, but the judge {judge_name(params)} has no stable name, so "
            "answers made under another judge could be served for it; define the judge as a "
            "module-level function, pass FunctionEvaluator(fn, name='...') (the name must "
            "change when the judge does), give your evaluator class an `identity` string, "
            "or build the model with cache=False"
        )
