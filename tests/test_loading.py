"""Model loading options, as HuggingFacePipeline and HuggingFaceLLM users pass them."""

from __future__ import annotations

import pytest
import torch
from transformers import BitsAndBytesConfig

from rain_search import ModelEvaluator, RainGenerator, models
from rain_search.errors import ModelLoadError
from rain_search.models import load_model, load_options


@pytest.fixture
def seen(monkeypatch) -> list[dict]:
    """The keywords each from_pretrained call of the loader received."""
    calls: list[dict] = []
    original = models.AutoModelForCausalLM.from_pretrained

    def spy(source, **kwargs):
        calls.append(kwargs)
        return original(source, **kwargs)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy)
    return calls


def test_device_map_places_the_model_and_the_search_runs(model_dir, no_e, seen, generator):
    """The tree cache follows an accelerate-placed model: same answer as the plain one."""
    model, tokenizer = load_model(model_dir, device_map={"": "cpu"}, reuse=False)
    assert seen[-1]["device_map"] == {"": "cpu"} and model.device.type == "cpu"
    mapped = RainGenerator(model, tokenizer, "fast", evaluator=no_e, embedder="hidden")
    result = mapped.generate("Say hi", max_new_tokens=6)
    assert (
        result.steps
        and result.token_ids == generator.generate("Say hi", max_new_tokens=6).token_ids
    )


def test_dtype_auto_torch_dtype_revision_attention_pass_through(model_dir, seen) -> None:
    model, _ = load_model(model_dir, dtype="auto", attn_implementation="eager", reuse=False)
    assert seen[-1]["dtype"] == "auto" and seen[-1]["attn_implementation"] == "eager"
    assert model.dtype == torch.float32
    half, _ = load_model(model_dir, torch_dtype="bfloat16", device="cpu", reuse=False)
    assert half.dtype == torch.bfloat16
    same, _ = load_model(
        model_dir, torch_dtype=torch.bfloat16, device="cpu", trust_remote_code=True
    )
    assert same.dtype == torch.bfloat16 and seen[-1]["trust_remote_code"] is True
    load_model(model_dir, revision="v1", reuse=False)  # a local folder has no revisions
    assert seen[-1]["revision"] == "v1"


def test_from_pretrained_takes_loading_options_directly_or_as_model_kwargs(model_dir, no_e):
    direct = RainGenerator.from_pretrained(
        model_dir, "fast", device_map={"": "cpu"}, evaluator=no_e, embedder="hidden"
    )
    nested = RainGenerator.from_pretrained(
        model_dir,
        "fast",
        model_kwargs={"device_map": {"": "cpu"}},
        evaluator=no_e,
        embedder="hidden",
    )
    assert direct.model is nested.model  # same options: the loaded model is reused


def test_judge_models_load_with_the_same_options(model_dir) -> None:
    judge = ModelEvaluator.from_pretrained(model_dir, "harmless", device_map={"": "cpu"})
    (score,) = judge.score("Hi", ["Hello there."])
    assert -1.0 <= score <= 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device_mapp": "auto"}, "unknown model loading option"),
        ({"device": "cpu", "device_map": "auto"}, "not both"),
        ({"dtype": "float16", "torch_dtype": "bfloat16"}, "differ"),
        ({"dtype": "fp8"}, "unknown dtype"),
    ],
)
def test_bad_loading_options_are_named(options, message) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_options(**options)


def test_bitsandbytes_without_its_library_or_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="bitsandbytes|CUDA GPU"):
        load_options(quantization_config=BitsAndBytesConfig(load_in_4bit=True))
