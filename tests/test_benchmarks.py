"""The benchmark scripts run end to end (on the tiny random Llama) and their judges behave."""

from __future__ import annotations

import json

import pytest

from benchmarks import quality, speed
from benchmarks.common import PeakMemory, lexicon_score, read_lines, table, write_json
from benchmarks.judges import COLD, WARM, EmbeddingToneJudge, refuses, tone
from rain_search import RainGenerator

TINY = {
    "prompts": 1,
    "tokens": 6,
    "paper_tokens": 3,
    "iterations": [4],
    "prefix": [0, 60],
    "prefix_answer_tokens": 3,
}


def test_data_sets_are_the_documented_sizes() -> None:
    assert len(read_lines("tone_prompts.txt")) >= 50
    assert len(read_lines("harmful_requests.txt")) >= 40
    assert len(read_lines("speed_prompts.txt")) >= speed.FULL["prompts"]
    assert WARM and COLD and not WARM & COLD


def test_tone_lexicon_is_graded_and_bounded() -> None:
    assert tone("") == 0.0 and tone("The fridge moves heat outside.") == 0.0
    assert tone("I hate this stupid idea") < 0 < tone("Thank you, I am glad to help")
    assert tone("Thanks. I hope it helps, and I am glad.") > tone("Thanks. It works as it is.")
    assert -1 <= lexicon_score("hate " * 50, WARM, COLD) <= 1


def test_refusal_matcher() -> None:
    assert refuses("I'm sorry, but I can't help with that.")
    assert refuses("That would be illegal; please don't.")
    assert not refuses("Sure! First, take a tension wrench and")


def test_held_out_judge_prefers_warm_text() -> None:
    judge = EmbeddingToneJudge()
    assert judge("Thank you, I understand and I'm happy to help you.") > judge(
        "You are an idiot and I hate you."
    )


@pytest.mark.slow  # 40 s of self-judging a 4.5k-token template; the quality benchmark runs
def test_speed_benchmark_runs_and_reencoding_costs_more(tiny_llama, tmp_path) -> None:
    model, tokenizer = tiny_llama
    generators = speed.make_generators(model, tokenizer)
    prompts = ["Tell me about bread."]
    modes = speed.compare_modes(generators, prompts, TINY)
    paper = speed.compare_paper(generators, prompts[0], TINY)
    iterations = speed.scale_iterations(generators[("self", True)], prompts[0], TINY)
    prefix = speed.scale_prefix(generators, prompts[0], TINY)
    cached = [row["search_tokens_processed"] for row in prefix if row["kv_cache"]]
    reencoded = [row["search_tokens_processed"] for row in prefix if not row["kv_cache"]]
    assert reencoded[-1] - reencoded[0] > cached[-1] - cached[0]
    mean = modes["mean"]
    assert mean["vanilla"]["forward_calls"] == pytest.approx(1.0)
    for label, *_ in speed.CASES:
        assert mean[label]["wall_time"] > 0 and mean[label]["peak_memory_mb"] >= 0
    assert (
        mean["rain fast, self-judge, re-encode"]["tokens_processed"]
        > mean["rain fast, self-judge"]["tokens_processed"]
    )
    report = {
        "machine": {"cpu_count": 2},
        "model": "tiny",
        "device": "cpu",
        "sizes": TINY,
        "modes": modes,
        "paper": paper,
        "iterations": iterations,
        "prefix": prefix,
        "targets": speed.targets(modes, paper),
    }
    goals = report["targets"]
    assert goals["paper_tokens_reencode_vs_cached"]["measured"] > 1
    calls = min(paper[label]["forward_calls"] for label in speed.PAPER_SEARCHES)
    assert goals["paper_self_calls_per_token"]["measured"] == calls
    assert goals["paper_self_wall_vs_vanilla"]["target"] == "<= 12.0"
    path = write_json("speed-test", report, tmp_path)
    speed.plot(json.loads(path.read_text()), path.with_suffix(".png"))
    speed.print_report(report)
    assert path.with_suffix(".png").stat().st_size > 10_000


def test_quality_benchmark_scores_both_modes_with_every_judge(tiny_llama, tmp_path) -> None:
    model, tokenizer = tiny_llama
    generator = RainGenerator(model, tokenizer, "fast", evaluator=tone)
    judges = {"tone": lambda text, prompt: tone(text), "refusal": lambda t, p: float(refuses(t))}
    part = quality.compare(generator, ["Say hi.", "Say bye."], 6, judges)
    summary = part["summary"]["judges"]["tone"]
    assert summary["prompts"] == 2 and summary["wins"] + summary["ties"] + summary["losses"] == 2
    report = {"model": "tiny", "device": "cpu", "preset": "fast", "tone": part}
    quality.plot(report, tmp_path / "quality.png")
    quality.print_report(report)
    assert (tmp_path / "quality.png").exists()


def test_peak_memory_sees_an_allocation() -> None:
    import torch

    memory = PeakMemory(torch.device("cpu"))
    with memory.measure():
        block = torch.ones(64, 2**20 // 4)  # 64 MiB
        block += 1
    assert memory.peak_bytes > 32 * 2**20


def test_table_formats_numbers() -> None:
    text = table([{"a": "x", "b": 1.23456}], ["a", "b"])
    assert "1.23" in text and "1.2346" not in text


def test_random_shape_models_build_offline() -> None:
    from benchmarks.common import load

    model, tokenizer = load("random:tiny", "cpu")
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    with pytest.raises(SystemExit, match="unknown random shape"):
        load("random:13b", "cpu")


def test_efficacy_baseline_without_one_leaf_answers_is_refused_before_any_run(tmp_path) -> None:
    from benchmarks.efficacy import earlier_baseline

    cases = [{"prompt": "What color is the sky?"}]
    only_shipped = tmp_path / "efficacy.json"
    only_shipped.write_text(json.dumps({"cases": [{"prompt": cases[0]["prompt"], "shipped": {}}]}))
    with pytest.raises(SystemExit, match="has no k1 answer for 1 case"):
        earlier_baseline(only_shipped, cases)
    with_k1 = tmp_path / "before.json"
    with_k1.write_text(json.dumps({"cases": [{"prompt": cases[0]["prompt"], "k1": {"text": "t"}}]}))
    assert earlier_baseline(with_k1, cases) == ["t"]


def test_speed_report_of_one_section_prints_and_plots(tmp_path, capsys) -> None:
    """`--sections modes` into an empty folder has no paper, T or prefix rows (it crashed)."""
    row = {"completion_tokens": 4, "wall_time": 0.1, "forward_calls": 1.0}
    row |= {"tokens_processed": 2.0, "peak_memory_mb": 1.0, "peak_memory_mb_per_token": 0.25}
    report = {"model": "tiny", "device": "cpu", "machine": {"cpu_count": 2}}
    report["modes"] = {"mean": {"vanilla": row, "rain fast": {**row, "wall_time": 0.4}}}
    speed.plot(report, tmp_path / "speed.png")
    speed.print_report(report)
    assert (tmp_path / "speed.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "rain fast" in out and "iteration budget" not in out


def test_engine_scale_section_reports_speed_answers_operations_and_split(tiny_llama) -> None:
    from benchmarks import engine

    model, tokenizer = tiny_llama
    generator = RainGenerator(model, tokenizer, "fast", evaluator=tone, embedder="hidden")
    sizes = {**engine.QUICK, "scale_tokens_cpu": 2, "scale_solo": 2, "ops": [1, 2]}
    sizes["ops_tokens"] = 2
    part = engine.scale(generator, generator, "Say hi.", sizes, searches=[1, 2])
    one, two = part["rows"]
    assert (one["searches"], two["searches"]) == (1, 2) and two["same_answers"] == "2/2"
    for row in part["rows"]:
        assert row["tokens_per_s"] > 0 and row["plain_tokens_per_s"] > 0 and row["vs_plain"] > 0
    split = part["split"]
    assert split["forward_calls"] > 0 and split["embed_calls"] > 0 and split["judge_calls"] > 0
    parts = sum(split[f"{name}_s"] for name in ("forward", "judge", "embed", "host"))
    assert parts == pytest.approx(split["wall_s"])
    ops = part["operations"]
    assert [row["searches"] for row in ops["rows"]] == [1, 2] and ops["ratio"] > 0
    assert all(row["per_token"] > 0 and row["top"] for row in ops["rows"])
    assert part["targets"]["ops_per_token_2_vs_1"]["target"] == "<= 0.25"
    assert part["targets"]["same_answers_2"]["met"]
    engine.print_scale(part, "float32")
    # the wrappers are gone: the class's methods show through again
    assert "forward" not in vars(generator.backend) and "embed" not in vars(generator.embedder)


def test_engine_concurrent_section_splits_both_legs_on_a_cpu(tiny_llama, capsys) -> None:
    from benchmarks import engine

    model, tokenizer = tiny_llama
    generator = RainGenerator(model, tokenizer, "fast", evaluator=tone, embedder="hidden")
    sizes = {**engine.QUICK, "concurrent": 2, "concurrent_tokens": 2}
    row = engine.concurrency(generator, "Say hi.", sizes, leaves=2)
    assert row["same_answers"] == "2/2" and row["throughput_gain"] > 0
    for leg, wall in (("sequential", row["sequential_s"]), ("concurrent", row["concurrent_s"])):
        split = row[f"split_{leg}"]
        assert split["forward_calls"] > 0 and split["wall_s"] == wall
    assert row["forward_gain"] == pytest.approx(
        row["split_sequential"]["forward_s"] / row["split_concurrent"]["forward_s"]
    )
    engine.print_report({"concurrent": row})
    assert "sequential: forward" in capsys.readouterr().out
    assert "forward" not in vars(generator.backend)


def test_engine_host_section_times_turns_and_full_collections_with_the_heap_as_is_and_frozen() -> (
    None
):
    import gc

    from benchmarks import engine

    part = engine.host_work("Say hi.", {**engine.QUICK, "host_searches": 3, "host_tokens": 2})
    loaded, frozen = part["rows"]
    assert (loaded["heap"], frozen["heap"]) == ("as loaded", "frozen")
    for row in part["rows"]:
        assert row["searches"] == 3 and row["turns"] > 0 and row["ms_per_turn"] > 0
        assert row["full_gc_passes"] >= 0 and row["forward_s"] > 0
    assert part["same_answers"]
    assert gc.get_freeze_count() == 0  # the section gives the heap back as it found it


def test_full_collections_counts_only_the_oldest_generation() -> None:
    import gc

    from benchmarks import engine

    with engine.full_collections() as passes:
        gc.collect(0)
        gc.collect(2)
    assert passes["count"] == 1 and passes["seconds"] > 0


def test_op_counter_counts_aten_operations() -> None:
    import torch

    from benchmarks.opcount import OpCounter

    with OpCounter() as ops:
        (torch.ones(3) * 2).sum()
    assert ops.total == 3 and ops.by_op["mul"] == 1


def test_embed_probe_times_minilm_by_batch_size(tmp_path) -> None:
    from benchmarks import embed_probe

    assert embed_probe.texts_like_a_turn(5) == embed_probe.texts_like_a_turn(5)
    argv = ["--device", "cpu", "--counts", "6", "--batch-sizes", "4", "0", "--repeats", "1"]
    assert embed_probe.main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "embed_probe.json").read_text())["rows"]
    assert [(r["batch_size"], r["calls"]) for r in rows] == [(4, 2), (6, 1)]
    assert rows[0]["max_diff"] == 0 and rows[1]["max_diff"] < 1e-5
    assert all(r["encode_s"] > 0 and r["tokenize_s"] > 0 for r in rows)
