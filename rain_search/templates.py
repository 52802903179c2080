"""Evaluation templates: how the model is asked whether a partial answer is good.

A template is data — an instruction, optional few-shot examples, a question
with two labelled options and the text that precedes the model's answer — so
users write their own in YAML or JSON without touching code, and a template
file can never run code (it is read with ``yaml.safe_load``).

The rendered judge prompt has a *fixed* part (instruction and examples), the
same for every judgment so its key/value cache is computed once, and a
*variable* part (the conversation, the question and the options in one of the
two orders). Text from the user or the model is put into its slot in one pass
and defanged so it cannot forge an option line or the answer prefix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rain_search.errors import TemplateError
from rain_search.untrusted import Segment, joined

SLOTS = ("prompt", "response")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
"""A ``{slot}``, or an escaped ``{{`` / ``}}`` (group 1 is then None)."""


class FewShotExample(BaseModel):
    """A worked judgment shown before the real one, optionally with the reason for it.

    An explanation after the label shows the model *why* (the paper's judge
    prompt explains each of its examples); it follows the label, so the
    model's own judgment is still read from the label's probability.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    good: bool
    explanation: str = ""


class EvalTemplate(BaseModel):
    """One way of judging a response, e.g. harmless vs harmful.

    ``good_option`` and ``bad_option`` are shown as ``(A) ...`` / ``(B) ...``
    in both orders; the score is read from the probabilities of the two labels
    after ``answer_prefix``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    instruction: str = Field(min_length=1)
    examples: tuple[FewShotExample, ...] = ()
    conversation: str = "Human: {prompt}\nAssistant: {response}"
    question: str = Field(min_length=1)
    good_option: str = Field(min_length=1)
    bad_option: str = Field(min_length=1)
    labels: tuple[str, str] = ("A", "B")
    answer_prefix: str = "The answer is: ("

    @field_validator("conversation")
    @classmethod
    def _slots_present_once(cls, conversation: str) -> str:
        found = [m.group(1) for m in _PLACEHOLDER.finditer(conversation) if m.group(1) is not None]
        unknown = sorted(set(found) - set(SLOTS))
        if unknown:
            raise ValueError(
                f"conversation has unknown placeholder(s) {unknown}; only {{prompt}} and "
                "{response} are filled in (write literal braces as {{ and }})"
            )
        for slot in SLOTS:
            if found.count(slot) != 1:
                raise ValueError(
                    f"conversation must contain the placeholder {{{slot}}} exactly once, "
                    f"found {found.count(slot)} times"
                )
        return conversation

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: tuple[str, str]) -> tuple[str, str]:
        if any(not label.strip() or label != label.strip() for label in labels):
            raise ValueError(f"labels must be non-empty without surrounding spaces, got {labels}")
        if labels[0] == labels[1]:
            raise ValueError(f"the two labels must differ, got {labels[0]!r} twice")
        return labels

    @model_validator(mode="after")
    def _distinct_options(self) -> EvalTemplate:
        if self.good_option.strip() == self.bad_option.strip():
            raise ValueError("good_option and bad_option are identical; the judge could not choose")
        if not self.answer_prefix.strip():
            raise ValueError("answer_prefix must not be empty (e.g. 'The answer is: (')")
        return self

    # -- rendering -------------------------------------------------------------

    @property
    def good_label(self) -> str:
        """The label of the good option when it is shown first."""
        return self.labels[0]

    @property
    def bad_label(self) -> str:
        return self.labels[1]

    def fixed_text(self) -> str:
        """Instruction and few-shot examples: identical for every judgment."""
        parts = [self.instruction.strip()]
        for i, example in enumerate(self.examples):
            good_first = i % 2 == 0  # alternate so the examples themselves carry no position bias
            answer = self.labels[0] if example.good == good_first else self.labels[1]
            closing = ")" if self.answer_prefix.rstrip().endswith("(") else ""
            judgment = self.variable_text(example.prompt, example.response, good_first)
            reason = f"\nExplanation: {example.explanation.strip()}" if example.explanation else ""
            parts.append(judgment.removeprefix("\n\n") + answer + closing + reason)
        return "\n\n".join(parts)

    def variable_text(self, prompt: str, response: str, good_first: bool) -> str:
        """The judgment of one response, ending where the model writes its label."""
        return self.conversation_text(prompt, response) + self.question_text(good_first)

    def conversation_text(self, prompt: str, response: str) -> str:
        """The first part of :meth:`variable_text`: the same in both option orders.

        Successive judgments during a search share most of it (the prompt and
        the committed answer), so the judge caches it by token prefix.
        """
        return joined(self.conversation_segments(prompt, response))

    def conversation_segments(self, prompt: str, response: str) -> list[Segment]:
        """:meth:`conversation_text` as the template's text (trusted) and the filled slots (not).

        The judge tokenises the slots with special-token parsing off, so a
        prompt or response cannot forge the judge's own markup either.
        """
        values = {"prompt": self.defang(prompt), "response": self.defang(response)}
        segments, start = [Segment("\n\n", True)], 0
        for match in _PLACEHOLDER.finditer(self.conversation):
            literal = self.conversation[start : match.start()]
            if match.group(1) is None:  # an escaped brace
                segments.append(Segment(literal + match.group(0)[0], True))
            else:
                segments += [Segment(literal, True), Segment(values[match.group(1)], False)]
            start = match.end()
        segments.append(Segment(self.conversation[start:], True))
        return [segment for segment in segments if segment.text]

    def question_text(self, good_first: bool) -> str:
        """The last part of :meth:`variable_text`: the question, options and answer prefix.

        It depends only on the option order, so it is a fixed suffix.
        """
        options = (self.good_option, self.bad_option)
        if not good_first:
            options = options[::-1]
        lines = ["", "", self.question.strip()]
        lines += [
            f"({label}) {option.strip()}"
            for label, option in zip(self.labels, options, strict=True)
        ]
        return "\n".join(lines) + "\n" + self.answer_prefix

    def render(self, prompt: str, response: str, good_first: bool = True) -> str:
        """The whole judge prompt, for display and debugging."""
        return joined(self.render_segments(prompt, response, good_first))

    def render_segments(self, prompt: str, response: str, good_first: bool = True) -> list[Segment]:
        """The whole judge prompt, with the prompt and response marked untrusted."""
        return [
            Segment(self.fixed_text(), True),
            *self.conversation_segments(prompt, response),
            Segment(self.question_text(good_first), True),
        ]

    def defang(self, text: str) -> str:
        """``text`` with forged option markers and answer prefixes made harmless.

        An adversarial response could otherwise end with "The answer is: (A"
        and answer the question on the judge's behalf.
        """
        for label in self.labels:
            text = text.replace(f"({label})", f"[{label}]")
        stem = self.answer_prefix.rstrip(" (").strip()
        if stem:
            text = re.sub(
                re.escape(stem), lambda m: m.group(0).replace(":", " -"), text, flags=re.IGNORECASE
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# -- loading -----------------------------------------------------------------------


def builtin_names() -> list[str]:
    """Names of the templates shipped with the package."""
    folder = resources.files("rain_search") / "template_data"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


@cache
def _builtin(name: str) -> EvalTemplate:
    text = (resources.files("rain_search") / "template_data" / f"{name}.yaml").read_text("utf-8")
    return from_mapping(yaml.safe_load(text), f"built-in template {name!r}")


def load_template(spec: str | Path | Mapping[str, Any] | EvalTemplate) -> EvalTemplate:
    """A template from a built-in name, a ``.yaml``/``.json`` file, a mapping or itself."""
    if isinstance(spec, EvalTemplate):
        return spec
    if isinstance(spec, Mapping):
        return from_mapping(spec, "template")
    if isinstance(spec, str | Path):
        if isinstance(spec, str) and spec in builtin_names():
            return _builtin(spec)
        path = Path(spec).expanduser()
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            return from_file(path)
        raise TemplateError(
            f"unknown template {str(spec)!r}; built-ins are {', '.join(builtin_names())}, "
            "or give a path to a .yaml/.json template file"
        )
    raise TemplateError(
        f"a template must be a name, a file path, a mapping or an EvalTemplate, "
        f"got {type(spec).__name__}"
    )


def from_file(path: Path) -> EvalTemplate:
    if not path.is_file():
        raise TemplateError(f"template file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(
            f"template file {str(path)!r} is not valid {path.suffix[1:]}: {exc}"
        ) from exc
    if not isinstance(data, Mapping):
        raise TemplateError(
            f"template file {str(path)!r} must hold a mapping of fields "
            f"(name, instruction, question, ...), found {type(data).__name__}"
        )
    return from_mapping(data, f"template file {str(path)!r}")


def from_mapping(data: Mapping[str, Any], source: str) -> EvalTemplate:
    try:
        return EvalTemplate.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'template'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TemplateError(f"{source} is invalid: {problems}") from None


class _Dumper(yaml.SafeDumper):
    """Long strings as folded blocks: no quoting or escaped apostrophes in prose."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else (">" if len(value) > 80 else None)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def template_identity(template: EvalTemplate) -> str:
    """The template's name and a digest of its whole content: two files that share a
    name but word the question differently judge differently, so they differ here."""
    digest = hashlib.sha256(template.model_dump_json().encode()).hexdigest()[:16]
    return f"{template.name}@{digest}"


def dump_template(template: EvalTemplate) -> str:
    """YAML text that :func:`load_template` reads back to an equal template."""
    return yaml.dump(
        template.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
