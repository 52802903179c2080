"""RainLLM, ChatRain and RainGuard in LangChain, on a tiny random Llama (fast)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.tools import tool
from pydantic import ValidationError

from rain_integrations.langchain import ChatRain, RainGuard, RainLLM
from rain_search.errors import ConfigError


@pytest.fixture
def llm(generator) -> RainLLM:
    return RainLLM.from_generator(generator, max_new_tokens=8)


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


def test_invoke_matches_the_core_and_reports_statistics(llm, generator) -> None:
    expected = generator.generate("Hello", max_new_tokens=8)
    result = llm.generate(["Hello"])
    generation = result.generations[0][0]
    assert generation.text == expected.text
    info = generation.generation_info
    assert info["finish_reason"] == expected.finish_reason
    # The same search (forward calls can differ: the embedder's cache is warm by now).
    assert info["search"]["iterations"] == expected.stats["iterations"]
    assert info["token_sets"] == expected.token_sets
    usage = result.llm_output["token_usage"]
    assert usage["completion_tokens"] == expected.completion_tokens
    assert usage["total_tokens"] == expected.prompt_tokens + expected.completion_tokens
    assert llm.invoke("Hello") == expected.text


def test_stream_emits_committed_sets_and_callbacks(llm) -> None:
    handler = Tokens()
    story = "Tell me a story."
    chunks = list(llm.stream(story, max_new_tokens=16, config={"callbacks": [handler]}))
    assert len(chunks) == 5  # four committed sets, merged into one generation, then the end
    assert "".join(chunks) == llm.invoke(story, max_new_tokens=16)
    handler.tokens.clear()
    chunks = list(llm.stream("Hello", config={"callbacks": [handler]}))
    assert "".join(chunks) == llm.invoke("Hello")
    assert len(chunks) >= 2 and chunks[-1] == ""  # the last chunk closes with the metadata
    assert handler.tokens == chunks[:-1]


def test_lcel_chain(llm) -> None:
    chain = PromptTemplate.from_template("Answer briefly: {question}") | llm | StrOutputParser()
    answer = chain.invoke({"question": "what is rain?"})
    assert isinstance(answer, str) and answer
    assert chain.batch([{"question": "a"}, {"question": "b"}]) == [
        chain.invoke({"question": "a"}),
        chain.invoke({"question": "b"}),
    ]


def test_per_call_overrides_and_bind(llm) -> None:
    short = llm.invoke("Hello", max_new_tokens=2)
    assert len(llm.rain.tokenizer.encode(short, add_special_tokens=False)) <= 2
    assert llm.bind(seed=5).invoke("Hello") == llm.invoke("Hello", seed=5)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\]"):
        llm.invoke("Hello", colour="red")
    with pytest.raises(ConfigError, match="max_iterations"):
        llm.invoke("Hello", max_iterations=0)


def test_stop_sequences_cut_the_answer(llm) -> None:
    full = llm.invoke("Hello", max_new_tokens=12)
    stop = full.strip()[:1]
    assert stop, "the model said something"
    assert stop not in llm.invoke("Hello", max_new_tokens=12, stop=[stop])


def test_async_calls_do_not_block_the_event_loop(llm) -> None:
    async def main() -> tuple[str, list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        text = await llm.ainvoke("Hello")
        chunks = [chunk async for chunk in llm.astream("Hello")]
        task.cancel()
        return text, chunks, ticks

    text, chunks, ticks = asyncio.run(main())
    assert text == llm.invoke("Hello") == "".join(chunks)
    assert ticks > 0


def test_construction_errors_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="max_new_tokens"):
        RainLLM(max_new_tokens=0)
    with pytest.raises(ValidationError, match="unknown preset 'quick'"):
        RainLLM(preset="quick")
    with pytest.raises(ValidationError, match="unknown template 'harmles'"):
        RainLLM(template="harmles")


def test_identifying_params_and_type(llm) -> None:
    params = llm._identifying_params
    assert params["max_new_tokens"] == 8 and params["num_children"] == 4
    assert llm._llm_type == "rain"
    assert RainLLM().model_name == "SmolLM2-135M-Instruct"  # lazy: nothing loaded yet
    loaded = RainLLM(model_id=None, embedder="hidden")
    loaded.rain  # noqa: B018 - builds the generator
    assert loaded.model_name == "SmolLM2-135M-Instruct"  # still the name, not the cache path


def test_chat_model_with_system_and_history(generator) -> None:
    chat = ChatRain.from_generator(generator, max_new_tokens=6)
    messages = [
        SystemMessage("You are brief."),
        HumanMessage("Hi"),
        AIMessage("Hello."),
        HumanMessage("How are you?"),
    ]
    reply = chat.invoke(messages)
    assert isinstance(reply, AIMessage) and reply.content
    assert (
        reply.usage_metadata["output_tokens"]
        == reply.response_metadata["search"]["completion_tokens"]
    )
    streamed = list(chat.stream(messages))
    assert "".join(c.content for c in streamed) == reply.content
    assert sum(1 for c in streamed if c.usage_metadata) == 1


def test_guard_passes_good_text_and_replaces_bad(generator, no_e) -> None:
    guard = RainGuard(evaluator=no_e, replacement="[removed]")
    assert guard.invoke("the good stuff") == "[removed]"
    assert guard.invoke("a calm hydrant") == "a calm hydrant"
    message = guard.invoke(ToolMessage("delete everything", tool_call_id="1"))
    assert message.content == "[removed]"
    assert message.response_metadata["rain_guard"] == {"score": -1.0, "action": "replace"}
    annotated = RainGuard(evaluator=no_e, policy="annotate").invoke({"text": "hey"})
    assert annotated["text"] == "hey" and annotated["rain_guard"]["action"] == "annotate"


def test_guard_regenerates_with_rain(generator, no_e) -> None:
    llm = RainLLM.from_generator(generator, max_new_tokens=6)
    guard = RainGuard(llm=llm, evaluator=no_e, policy="regenerate", replacement="[removed]")
    out = guard.invoke({"text": "eeee", "prompt": "say something"})
    assert out["rain_guard"]["action"] in ("regenerate", "replace")
    assert "e" not in out["text"] or out["text"] == "[removed]"


def test_guard_regenerates_the_same_way_under_ainvoke(generator, no_e) -> None:
    llm = RainLLM.from_generator(generator, max_new_tokens=6)
    guard = RainGuard(llm=llm, evaluator=no_e, policy="regenerate", replacement="[removed]")
    page = {"text": "eeee", "prompt": "say something"}
    assert asyncio.run(guard.ainvoke(page)) == guard.invoke(page)


def test_guard_wraps_a_tool_and_composes_in_lcel(generator, no_e) -> None:
    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return f"result for {query}"

    guarded = RainGuard(evaluator=no_e, replacement="[removed]").wrap_tool(lookup)
    assert guarded.name == "lookup" and guarded.args == lookup.args
    assert guarded.invoke({"query": "x"}) == "[removed]"  # "result" has an e
    call = {"name": "lookup", "args": {"query": "x"}, "id": "call-1", "type": "tool_call"}
    message = guarded.invoke(call)
    assert message.content == "[removed]" and message.tool_call_id == "call-1"
    assert message.response_metadata["rain_guard"] == {"score": -1.0, "action": "replace"}
    assert message.artifact is None  # the tool's own artifact (it has none) is kept
    chain = lookup | RainGuard(evaluator=lambda t: 1.0)
    assert chain.invoke({"query": "x"}) == "result for x"


def test_guard_configuration_errors(no_e) -> None:
    with pytest.raises(ValidationError, match="needs llm= .* or evaluator="):
        RainGuard()
    with pytest.raises(ValidationError, match="regenerate' needs llm="):
        RainGuard(evaluator=no_e, policy="regenerate")
