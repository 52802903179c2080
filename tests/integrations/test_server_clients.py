"""Ordinary OpenAI clients against a running RAIN server on the embedded SmolLM2.

LangChain's ``ChatOpenAI`` and LlamaIndex's ``OpenAILike`` are pointed at the
server's URL with an API key, as a user would; answers are 8 tokens with the
fast preset and a keyword judge, so each call takes a second or two.
"""

from __future__ import annotations

import pytest

from rain_integrations.server import ServerLimits, build_app
from rain_search.models import EMBEDDED_MODEL_NAME
from rain_search.search import RainGenerator
from tests.integrations.live import running

KEY = "client-key"
QUESTION = "Name a fruit."


def no_weapons(text: str) -> float:
    return -1.0 if "knife" in text.lower() else 1.0


@pytest.fixture(scope="module")
def server(embedded_model):
    model, tokenizer = embedded_model
    generator = RainGenerator(model, tokenizer, "fast", evaluator=no_weapons, embedder="hidden")
    app = build_app(
        generator, api_key=KEY, model_name=EMBEDDED_MODEL_NAME, limits=ServerLimits(max_queue=4)
    )
    with running(app) as url:
        yield f"{url}/v1"


def test_langchain_chat_openai_invoke_stream_and_batch(server) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=server,
        api_key=KEY,
        model=EMBEDDED_MODEL_NAME,
        max_tokens=8,
        seed=0,
        stream_usage=True,
        max_retries=0,
    )
    answer = llm.invoke(QUESTION)
    assert isinstance(answer.content, str) and answer.content
    assert 0 < answer.usage_metadata["output_tokens"] <= 8
    assert answer.response_metadata["finish_reason"] in ("stop", "length")

    chunks = list(llm.stream(QUESTION))
    assert len(chunks) >= 2
    assert "".join(str(c.content) for c in chunks) == answer.content  # same seed, same answer
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == answer.usage_metadata["output_tokens"]

    batch = llm.batch([QUESTION, "Name a colour."])
    assert batch[0].content == answer.content and batch[1].content


def test_langchain_reports_a_bad_rain_setting_as_the_server_said(server) -> None:
    import openai
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=server,
        api_key=KEY,
        model=EMBEDDED_MODEL_NAME,
        max_retries=0,
        extra_body={"rain": {"num_children": 0}},
    )
    with pytest.raises(openai.BadRequestError, match="num_children"):
        llm.invoke(QUESTION)
    wrong_key = ChatOpenAI(
        base_url=server, api_key="nope", model=EMBEDDED_MODEL_NAME, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong_key.invoke(QUESTION)


def test_llama_index_openai_like_chat_and_stream(server) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model=EMBEDDED_MODEL_NAME,
        api_base=server,
        api_key=KEY,
        is_chat_model=True,
        max_tokens=8,
        max_retries=0,
        additional_kwargs={"seed": 0},
    )
    messages = [ChatMessage(role="user", content=QUESTION)]
    reply = llm.chat(messages)
    assert reply.message.content
    streamed = list(llm.stream_chat(messages))
    assert streamed[-1].message.content == reply.message.content
    assert "".join(r.delta or "" for r in streamed) == reply.message.content
