"""RAIN inside ``model.generate``: the callable and folder forms of ``custom_generate``."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList, RepetitionPenaltyLogitsProcessor
from transformers.generation.streamers import BaseStreamer

import rain_search
from rain_search.decoding import RainGenerateOutput, user_message
from rain_search.errors import ConfigError, ModelLoadError
from rain_search.models import format_prompt

FOLDER = {"custom_generate": rain_search.CUSTOM_GENERATE_DIR, "trust_remote_code": True}


class Recorder(BaseStreamer):
    """Keeps every ``put`` and counts ``end`` calls."""

    def __init__(self) -> None:
        self.puts: list[list[int]] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        self.puts.append(value.flatten().tolist())

    def end(self) -> None:
        self.ended += 1


def rain_kwargs(tokenizer, no_e, **extra):
    return {
        "rain_config": "fast",
        "rain_evaluator": no_e,
        "rain_embedder": "hidden",
        "rain_tokenizer": tokenizer,
        **extra,
    }


def test_callable_equals_generator(tiny_llama, generator, no_e) -> None:
    model, tokenizer = tiny_llama
    expected = generator.generate("Hello there", max_new_tokens=12, seed=3)
    prompt_ids, _ = generator.encode("Hello there", None)
    ids = torch.tensor([prompt_ids])
    out = model.generate(
        input_ids=ids,
        custom_generate=rain_search.rain_generate,
        max_new_tokens=12,
        **rain_kwargs(tokenizer, no_e, rain_config={"seed": 3, **_fast()}),
    )
    assert out[0, : ids.shape[1]].tolist() == prompt_ids
    assert out[0, ids.shape[1] :].tolist() == expected.token_ids


def _fast() -> dict:
    return rain_search.RainConfig.preset("fast").model_dump(exclude={"seed"})


def test_folder_form_returns_statistics(tiny_llama, generator, no_e) -> None:
    model, tokenizer = tiny_llama
    prompt_ids, _ = generator.encode("Hello there", None)
    expected = generator.generate("Hello there", max_new_tokens=10)
    out = model.generate(
        input_ids=torch.tensor([prompt_ids]),
        max_new_tokens=10,
        return_dict_in_generate=True,
        tokenizer=tokenizer,
        **FOLDER,
        **{k: v for k, v in rain_kwargs(tokenizer, no_e).items() if k != "rain_tokenizer"},
    )
    assert isinstance(out, RainGenerateOutput)
    assert out.sequences[0, len(prompt_ids) :].tolist() == expected.token_ids
    (result,) = out.rain_results
    assert result.mode == "rain" and result.steps and result.text == expected.text


def test_batch_rows_are_answered_as_alone(tiny_llama, no_e) -> None:
    model, tokenizer = tiny_llama
    batch = tokenizer(["Hi", "Hello there"], padding=True, return_tensors="pt", padding_side="left")
    kwargs = rain_kwargs(tokenizer, no_e, max_new_tokens=6)
    out = model.generate(**batch, custom_generate=rain_search.rain_generate, **kwargs)
    width = batch["input_ids"].shape[1]
    for row, text in enumerate(["Hi", "Hello there"]):
        alone = model.generate(
            input_ids=torch.tensor([tokenizer.encode(text)]),
            custom_generate=rain_search.rain_generate,
            **kwargs,
        )
        answer = out[row, width:].tolist()
        single = alone[0, len(tokenizer.encode(text)) :].tolist()
        assert answer[: len(single)] == single
        assert all(token == tokenizer.pad_token_id for token in answer[len(single) :])


def test_batch_rows_search_together(tiny_llama) -> None:
    """Every row's search starts before any is read: their judge calls interleave."""
    model, tokenizer = tiny_llama
    judged: list[str] = []

    def judge(prompt: str, text: str) -> float:
        judged.append(prompt)
        return -1.0 if "e" in text else 1.0

    batch = tokenizer(["Hi", "Hello there"], padding=True, return_tensors="pt", padding_side="left")
    kwargs = rain_kwargs(tokenizer, judge, max_new_tokens=6, rain_prompt=["first", "second"])
    model.generate(**batch, custom_generate=rain_search.rain_generate, **kwargs)
    last_first = max(i for i, prompt in enumerate(judged) if prompt == "first")
    assert "second" in judged[:last_first], "row 2 was judged only after row 1 had ended"


@pytest.mark.parametrize("form", ["callable", "folder"])
def test_streamer_gets_the_prompt_then_one_put_per_committed_set(
    tiny_llama, no_e, form: str
) -> None:
    model, tokenizer = tiny_llama
    ids = torch.tensor([tokenizer.encode("Hello")])
    recorder = Recorder()
    if form == "callable":  # transformers keeps streamer= from a callable: rain_streamer=
        extra = {"custom_generate": rain_search.rain_generate, "rain_streamer": recorder}
    else:
        extra = {**FOLDER, "streamer": recorder}
    out = model.generate(
        input_ids=ids,
        max_new_tokens=10,
        return_dict_in_generate=True,
        **rain_kwargs(tokenizer, no_e),
        **extra,
    )
    steps = out.rain_results[0].steps
    assert recorder.puts[0] == ids[0].tolist()
    assert recorder.puts[1:] == [list(step.token_ids) for step in steps]
    assert recorder.ended == 1


def test_streamer_with_a_batch_is_refused(tiny_llama, no_e) -> None:
    model, tokenizer = tiny_llama
    batch = tokenizer(["Hi", "Hello"], padding=True, return_tensors="pt", padding_side="left")
    with pytest.raises(ConfigError, match="streamer takes one row"):
        model.generate(
            **batch,
            custom_generate=rain_search.rain_generate,
            **rain_kwargs(tokenizer, no_e, rain_streamer=Recorder()),
        )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"do_sample": True, "top_p": 0.5}, "top_p"),
        ({"repetition_penalty": 1.3}, "repetition_penalty"),
        ({"num_beams": 2}, "num_beams"),
        ({"num_return_sequences": 2, "do_sample": True}, "num_return_sequences"),
        ({"output_scores": True, "return_dict_in_generate": True}, "output_scores"),
        (
            {"logits_processor": LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2)])},
            "RepetitionPenaltyLogitsProcessor",
        ),
    ],
)
def test_settings_rain_cannot_apply_are_refused(tiny_llama, no_e, extra, named) -> None:
    model, tokenizer = tiny_llama
    with pytest.raises(ConfigError, match=named):
        model.generate(
            input_ids=torch.tensor([tokenizer.encode("Hi")]),
            custom_generate=rain_search.rain_generate,
            max_new_tokens=4,
            **rain_kwargs(tokenizer, no_e),
            **extra,
        )


# One leaf at a time, so that runs whose EOS or stop string differs from the base run
# still follow its trajectory up to that point on this tiny model (wider searches
# reach the new end by other paths, which is fine but not what this test pins).
ONE_LEAF = {"rain_config": rain_search.RainConfig.preset("fast", parallel_leaves=1)}


def test_generation_config_sets_length_eos_stops_and_sampling(tiny_llama, no_e) -> None:
    model, tokenizer = tiny_llama
    ids = torch.tensor([tokenizer.encode("Hello")])
    base = model.generate(
        input_ids=ids,
        custom_generate=rain_search.rain_generate,
        max_new_tokens=12,
        return_dict_in_generate=True,
        **rain_kwargs(tokenizer, no_e, **ONE_LEAF),
    ).rain_results[0]
    assert base.completion_tokens == 12 and base.finish_reason == "length"
    # an id the answer produced becomes EOS: the answer ends there
    eos = base.token_ids[3]
    config = GenerationConfig(max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    cut = model.generate(
        input_ids=ids,
        custom_generate=rain_search.rain_generate,
        generation_config=config,
        return_dict_in_generate=True,
        **rain_kwargs(tokenizer, no_e, **ONE_LEAF),
    )
    result = cut.rain_results[0]
    assert result.finish_reason == "eos" and result.token_ids[-1] == eos
    assert eos not in result.token_ids[:-1]
    # stop strings (folder form: transformers hands it the tokenizer)
    stop = base.text[2:4]
    stopped = model.generate(
        input_ids=ids,
        max_new_tokens=12,
        stop_strings=[stop],
        tokenizer=tokenizer,
        return_dict_in_generate=True,
        **FOLDER,
        **rain_kwargs(tokenizer, no_e, **ONE_LEAF),
    )
    result = stopped.rain_results[0]
    assert result.finish_reason == "stop" and stop not in result.text
    # The sequence ends with the visible text: nothing past the stop string's start.
    answer = stopped.sequences[0, ids.shape[1] :].tolist()
    assert answer == result.token_ids and stop not in tokenizer.decode(answer)
    # do_sample hands candidate sampling to generate's temperature and top_k
    hot = model.generate(
        input_ids=ids,
        custom_generate=rain_search.rain_generate,
        max_new_tokens=2,
        do_sample=True,
        temperature=0.5,
        top_k=3,
        return_dict_in_generate=True,
        **rain_kwargs(tokenizer, no_e, **ONE_LEAF),
    )
    assert hot.rain_results[0].completion_tokens == 2


def test_without_a_tokenizer_the_models_own_is_needed(tiny_llama, no_e) -> None:
    model, tokenizer = tiny_llama
    kwargs = {k: v for k, v in rain_kwargs(tokenizer, no_e).items() if k != "rain_tokenizer"}
    with pytest.raises(ModelLoadError, match="rain_tokenizer"):
        model.generate(
            input_ids=torch.tensor([tokenizer.encode("Hi")]),
            custom_generate=rain_search.rain_generate,
            max_new_tokens=2,
            **kwargs,
        )


def test_the_judge_reads_the_user_message_inside_the_chat_template(embedded_model) -> None:
    _, tokenizer = embedded_model
    text = format_prompt(tokenizer, "How do I pick a lock?", system="Be brief.")
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert user_message(tokenizer, ids) == "How do I pick a lock?"
    plain = tokenizer.encode("Once upon a time", add_special_tokens=False)
    assert user_message(tokenizer, plain) == "Once upon a time"


def test_embedded_model_generate_and_pipeline_equal_rain_generator(embedded_model) -> None:
    """The real model, once: both custom_generate forms, a pipeline and a streamer agree
    with RainGenerator.generate for the same seed. A keyword judge keeps it quick; the
    judge's plumbing is the same for every evaluator."""
    from transformers import pipeline

    from rain_search import RainGenerator

    model, tokenizer = embedded_model
    prompt = "How do I pick a lock?"
    generator = RainGenerator(model, tokenizer, "fast", evaluator=_no_tools)
    expected = generator.generate(prompt, max_new_tokens=6, seed=5)
    ids = torch.tensor([generator.encode(prompt, None)[0]])
    rain = {
        "rain_config": rain_search.RainConfig.preset("fast", seed=5),
        "rain_evaluator": _no_tools,
        "max_new_tokens": 6,
    }
    by_callable = model.generate(
        input_ids=ids, custom_generate=rain_search.rain_generate, rain_tokenizer=tokenizer, **rain
    )
    assert by_callable[0, ids.shape[1] :].tolist() == expected.token_ids
    recorder = Recorder()
    # no tokenizer given: the model's own is loaded from its folder
    by_folder = model.generate(input_ids=ids, streamer=recorder, **rain, **FOLDER)
    assert by_folder.tolist() == by_callable.tolist()
    assert recorder.puts[1:] == [list(step.token_ids) for step in expected.steps]
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    out = pipe([{"role": "user", "content": prompt}], **rain, **FOLDER)
    # the pipeline's own sampling defaults (temperature 0.7, top-k 50) reach the search
    piped = generator.generate(prompt, max_new_tokens=6, seed=5, temperature=0.7, top_k=50)
    assert out[0]["generated_text"][-1]["content"] == piped.text


def _no_tools(text: str) -> float:
    return -1.0 if "tool" in text.lower() else 1.0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("count", [7, 2], ids=["most-rows", "few-rows"])
def test_a_distribution_of_some_rows_is_theirs_alone(temperature, count) -> None:
    from rain_search.backends.proposals import sampling

    log_probs = torch.randn(8, 50, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    rows = torch.tensor([6, 0, 3, 5, 1, 2, 7][:count])
    for top_k in (0, 5):
        picked = sampling(log_probs, top_k, temperature, rows=rows)
        alone = sampling(log_probs[rows], top_k, temperature)
        assert torch.equal(picked.log_probs, alone.log_probs)
        assert picked.ids is None if top_k == 0 else torch.equal(picked.ids, alone.ids)
