"""ChatRain as an agent's model, search settings as configurable fields, and batches that
share forward calls (issue 20), on the tiny random Llama."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from pydantic import BaseModel

from rain_integrations.langchain import ChatRain, RainLLM
from rain_search.errors import ConfigError, Unsupported


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return query


class Answer(BaseModel):
    text: str


def test_tools_and_structured_output_say_what_to_use_instead(generator) -> None:
    chat = ChatRain.from_generator(generator)
    with pytest.raises(Unsupported, match="cannot call tools.*RainGuardMiddleware"):
        chat.bind_tools([lookup])
    agent = create_agent(chat, tools=[lookup])  # the tools are bound when the model runs
    with pytest.raises(Unsupported, match="cannot call tools"):
        agent.invoke({"messages": [("user", "Look it up.")]})
    with pytest.raises(Unsupported, match="no structured output.*PydanticOutputParser"):
        chat.with_structured_output(Answer)
    assert isinstance(Unsupported("x"), NotImplementedError)  # callers catching that still do


@pytest.mark.parametrize("adapter", [RainLLM, ChatRain])
def test_search_settings_are_configurable_fields(adapter, generator) -> None:
    model = adapter.from_generator(generator, max_new_tokens=8)
    configurable = model.configurable_fields(
        max_new_tokens=ConfigurableField(id="length"),
        seed=ConfigurableField(id="seed"),
        preset=ConfigurableField(id="preset"),
    )

    def text(output) -> str:
        return output if isinstance(output, str) else output.content

    assert text(configurable.invoke("Hello")) == text(model.invoke("Hello"))
    short = configurable.with_config(configurable={"length": 2, "seed": 4})
    assert text(short.invoke("Hello")) == text(model.invoke("Hello", max_new_tokens=2, seed=4))
    assert len(generator.tokenizer.encode(text(short.invoke("Hello")))) <= 2
    paper = configurable.with_config(configurable={"preset": "paper", "length": 3})
    assert text(paper.invoke("Hi")) == text(model.invoke("Hi", preset="paper", max_new_tokens=3))
    specs = {spec.id: spec for spec in configurable.config_specs}
    assert specs["length"].annotation is int and specs["length"].default == 8
    assert specs["preset"].annotation is str


def test_configurable_field_errors(generator) -> None:
    model = RainLLM.from_generator(generator)
    with pytest.raises(ConfigError, match=r"\['template'\] cannot be configured together"):
        model.configurable_fields(
            seed=ConfigurableField(id="s"), template=ConfigurableField(id="t")
        )
    with pytest.raises(ConfigError, match="unknown preset"):
        model.invoke("Hello", preset="quick")


def test_a_batch_runs_its_searches_together_and_answers_as_alone(generator, tiny_llama) -> None:
    model, _ = tiny_llama
    llm = RainLLM.from_generator(generator, max_new_tokens=6)
    prompts = ["Hello", "Tell me a story.", "Why?"]
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        alone = [llm.invoke(p) for p in prompts]
        one_by_one = len(calls)
        calls.clear()
        together = llm.batch(prompts)
        batched = len(calls)
        calls.clear()
        together_async = asyncio.run(llm.abatch(prompts))
    finally:
        hook.remove()
    assert together == alone == together_async  # batching never changes an answer
    assert batched < one_by_one  # the searches shared forward calls
