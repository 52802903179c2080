"""Behaviour pinned to the reference RAIN (SafeAILab/RAIN, HH/adv/truth scripts).

Each test here failed on the search as it was before it was made to follow the
reference; the module docstrings of ``tree.py``/``search.py`` say why each rule is.
"""

from __future__ import annotations

import pytest
import torch
from driving import drive
from test_search import ConstantEmbedder, FakeBackend, WordEmbedder, run
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rain_search import RainConfig
from rain_search.backends.base import ExpandRequest
from rain_search.backends.hf import HFBackend
from rain_search.backends.judge import HFJudge
from rain_search.backends.proposals import punctuation_table, sampling
from rain_search.embeddings import HiddenStateEmbedder
from rain_search.evaluators import FunctionEvaluator
from rain_search.policy import TreeSearch
from rain_search.search import RainGenerator, run_alone, steps_alone
from rain_search.stats import Counters
from rain_search.templates import load_template
from rain_search.tree import Node

ATOL = 1e-4

# -- presets -------------------------------------------------------------------------


def test_presets_follow_the_reference_scripts() -> None:
    paper = RainConfig.preset("paper")
    assert (paper.votes, paper.swap_labels, paper.rollout_until) == ("hard", True, "punctuation")
    assert paper.rollout_max_tokens is None and paper.samples_per_expansion == 9
    adversarial = RainConfig.preset("adversarial")
    assert (adversarial.early_stop_visits, adversarial.temperature) == (5, 2.0)
    assert adversarial.samples_per_expansion == 19  # 2 * topk - 1 tries in adv/main.py
    truthful = RainConfig.preset("truthful")
    assert truthful.early_stop_visits == 16
    assert (truthful.swap_labels, truthful.rollout_until) == (False, "eos")


def test_adversarial_expansions_try_19_samples_and_keep_9() -> None:
    backend = FakeBackend()
    run(RainConfig.preset("adversarial", max_new_tokens=3), backend=backend)
    sampled = next(r for r in backend.requests if r.mode == "sample" and not r.exclude)
    assert (sampled.count, sampled.keep, sampled.greedy, sampled.temperature) == (19, 9, True, 2.0)


# -- rollouts ------------------------------------------------------------------------


def first_request(prompt: list[int], **config: object) -> ExpandRequest:
    backend = FakeBackend()
    search = TreeSearch(
        backend, FunctionEvaluator(lambda t: 0.0), WordEmbedder(), RainConfig(**config), "p"
    )
    next(steps_alone(search, prompt))
    return backend.requests[0]


def test_no_rollout_when_the_text_already_ends_a_clause() -> None:
    # "fine fine ." ends with a mark: the reference judges the root without rolling on.
    assert first_request([3, 3, 6], max_new_tokens=20).rollout_tokens == 0
    # "fine fine fine" does not: the rollout may run to the answer's budget (no cap).
    assert first_request([3, 3, 3], max_new_tokens=20).rollout_tokens == 20
    assert first_request([3, 3, 3], max_new_tokens=20, rollout_max_tokens=5).rollout_tokens == 5
    # Rolling out to the end of text (truthful) ignores punctuation.
    eos = first_request([3, 3, 6], max_new_tokens=20, rollout_until="eos")
    assert (eos.rollout_tokens, eos.rollout_until) == (20, "eos")


def test_rollout_stops_on_text_that_ends_with_a_mark() -> None:
    words = ["<unk>", ".", ",", "?", ":", ";", "\n", "!", '."', ".\n", "a,b", "word"]
    vocab = {w: i for i, w in enumerate(words)}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    )
    table = punctuation_table(tokenizer, len(words)).tolist()
    ends = {word for word, flag in zip(words, table, strict=True) if flag}
    # "!" is not one of the paper's marks; '."' and "a,b" contain a mark but do not end with one.
    assert ends == {".", ",", "?", ":", ";", "\n", ".\n"}


# -- dynamic node addition -----------------------------------------------------------


def test_multi_token_addition_adds_at_most_one_child_and_keeps_sibling_priors() -> None:
    config = RainConfig(token_set_schedule=(2,), num_children=3, max_children=6, max_new_tokens=2)
    backend = FakeBackend()
    search = TreeSearch(
        backend, FunctionEvaluator(lambda t: -1.0), ConstantEmbedder(), config, "prompt"
    )
    root = Node((), state=backend.start([3]))
    drive(search, search.iterate(root))
    priors = {child.token_ids: (child.prior, child.p) for child in root.children}
    sizes = [len(root.children)]
    for _ in range(40):
        drive(search, search.iterate(root))
        sizes.append(len(root.children))
    additions = [r for r in backend.requests if r.exclude]
    assert additions and all((r.count, r.keep, r.greedy) == (1, 1, False) for r in additions)
    assert max(b - a for a, b in zip(sizes, sizes[1:], strict=False)) == 1
    assert len(root.children) > 3
    for child in root.children:
        if child.token_ids in priors:
            assert (child.prior, child.p) == priors[child.token_ids]
        else:  # an added child: its own prior, mixed with uniform over the grown family
            assert child.p != child.prior


def test_an_addition_that_adds_nothing_is_not_counted() -> None:
    class NoNewChildren(FakeBackend):
        def expand(self, path, request, generator):  # type: ignore[no-untyped-def]
            expansion = super().expand(path, request, generator)
            if request.exclude:
                expansion.proposals = []
            return expansion

    backend = NoNewChildren()
    config = RainConfig(num_children=3, max_new_tokens=1)
    search = TreeSearch(
        backend, FunctionEvaluator(lambda t: -1.0), ConstantEmbedder(), config, "prompt"
    )
    result = run_alone(search, [3])
    grew = sum(1 for r in backend.requests if not r.exclude)
    tried = sum(1 for r in backend.requests if r.exclude)
    assert tried > 0
    assert result.stats["nodes_expanded"] == grew


# -- priors --------------------------------------------------------------------------


def next_log_probs(model, ids: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)


def test_priors_are_read_under_the_sampling_distribution(tiny_llama) -> None:
    # As the reference: each token's probability renormalised over the top-k at the
    # sampling temperature (adv/ uses T=2), not the full vocabulary at T=1.
    model, tokenizer = tiny_llama
    backend = HFBackend(model, tokenizer)
    prompt = tokenizer.encode("Human: hi.\nAssistant:")
    request = ExpandRequest(length=3, count=4, greedy=True, top_k=5, temperature=2.0)
    expansion = backend.expand([backend.start(prompt)], request, torch.Generator().manual_seed(0))
    for proposal in expansion.proposals:
        ids, expected = list(prompt), []
        for token in proposal.token_ids:
            expected.append(prior(next_log_probs(model, ids), 5, 2.0, token))
            ids.append(token)
        assert proposal.token_log_probs == pytest.approx(expected, abs=ATOL)
        full = [float(next_log_probs(model, list(prompt))[proposal.token_ids[0]])]
        assert proposal.token_log_probs[0] != pytest.approx(full[0], abs=ATOL)


def test_a_set_cut_at_eos_keeps_only_the_log_probs_up_to_eos(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    backend = HFBackend(model, tokenizer)
    backend.eos_token_ids = frozenset(range(len(tokenizer)))  # every token ends the answer
    root = backend.start(tokenizer.encode("Human: hi.\nAssistant:"))
    request = ExpandRequest(length=4, count=3, greedy=True, top_k=5)
    for proposal in backend.expand([root], request, torch.Generator().manual_seed(0)).proposals:
        assert len(proposal.token_ids) == 1
        assert proposal.token_log_probs == pytest.approx(
            [prior(root.next_log_probs, 5, 1.0, proposal.token_ids[0])]
        )


# -- judge ---------------------------------------------------------------------------


def sentencepiece_style_tokenizer() -> PreTrainedTokenizerFast:
    """A LLaMA-style tokenizer (Metaspace: a word-start marker, prefix space) trained here."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    template = load_template("harmless")
    corpus = [template.render("How do I bake bread?", "Mix flour and water.", o) for o in (1, 0)]
    corpus = [text.replace("(A", "( A").replace("(B", "( B") for text in corpus]  # 1-token labels
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet
    )
    tokenizer.train_from_iterator(corpus * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def test_the_judge_reads_exactly_the_tokens_of_its_text(tiny_llama) -> None:
    model, _ = tiny_llama
    tokenizer = sentencepiece_style_tokenizer()
    model = type(model)(model.config.__class__(**{**model.config.to_dict(), "vocab_size": 400}))
    template = load_template("harmless")
    judge = HFJudge(model.eval(), tokenizer, template, Counters())
    prompt, response = "How do I bake bread?", "Mix flour and water."
    for good_first, row in zip((True, False), judge.judgment_ids(prompt, response), strict=True):
        whole = tokenizer.encode(template.render(prompt, response, good_first))
        assert row == whole
    # Tokenising the pieces apart reads a different prompt (a marker at every join).
    pieces = tokenizer.encode(template.fixed_text()) + tokenizer.encode(
        template.variable_text(prompt, response, True), add_special_tokens=False
    )
    assert pieces != judge.judgment_ids(prompt, response)[0]
    # The prefix cache still gives what reading the whole text at once gives.
    [cached] = judge.score(prompt, [response])
    [again] = HFJudge(model, tokenizer, template, Counters()).score(prompt, [response + " "])
    [reused] = judge.score(prompt, [response + " "])
    assert reused == again and cached in (-1.0, 0.0, 1.0)


def test_one_label_order_when_swap_is_off(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    counters = Counters()
    judge = HFJudge(model, tokenizer, load_template("truthful"), counters, swap_labels=False)
    judge.fixed_cache()
    before = counters.tokens_processed
    [score] = judge.score("Is the sky green?", ["No, it is blue."])
    assert score in (-1.0, 1.0)  # one hard vote
    rows = judge.judgment_ids("Is the sky green?", ["No, it is blue."][0])
    assert len(rows) == 1
    assert counters.tokens_processed - before == len(rows[0]) - len(judge.fixed_ids)


def test_truthful_generator_builds_a_one_order_judge(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    gen = RainGenerator(model, tokenizer, "truthful", template="truthful", embedder="hidden")
    assert gen.evaluator.swap_labels is False and gen.evaluator.votes == "hard"


# -- counters ------------------------------------------------------------------------


def test_hidden_state_embedder_forward_calls_are_counted(tiny_llama, no_e) -> None:
    model, tokenizer = tiny_llama
    gen = RainGenerator(model, tokenizer, "fast", evaluator=no_e, embedder="hidden")
    result = gen.generate("Tell me a story.", max_new_tokens=4)
    assert isinstance(gen.embedder, HiddenStateEmbedder)
    embedded = gen.embedder.counters
    assert embedded.forward_calls > 0
    search_only = gen.backend.counters.forward_calls + gen.evaluator.counters.forward_calls
    assert result.totals.forward_calls == search_only + embedded.forward_calls


def test_tokens_past_a_stop_sequence_are_not_counted() -> None:
    _, stopped = run(RainConfig(max_new_tokens=50, stop_sequences=("nice",)))
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids[-1] == 4  # the set went on after "nice"; those tokens are gone
    assert stopped.completion_tokens == len(stopped.token_ids)
    assert sum(len(step.token_ids) for step in stopped.steps) == stopped.completion_tokens


def test_similarity_updates_are_reported() -> None:
    backend = FakeBackend()
    search = TreeSearch(
        backend, FunctionEvaluator(lambda t: 0.5), ConstantEmbedder(), RainConfig(), "p"
    )
    result = run_alone(search, [3, 3])
    assert result.stats["similarity_updates"] == sum(s.similarity_updates for s in result.steps)
    assert result.stats["similarity_updates"] > 0


def prior(log_probs: torch.Tensor, top_k: int, temperature: float, token: int) -> float:
    """A token's log-prob under the sampling distribution (top-k at T, renormalised)."""
    return float(sampling(log_probs[None], top_k, temperature).log_prob(torch.tensor([token]))[0])
