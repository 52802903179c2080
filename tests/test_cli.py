"""The ``rain`` command line, on a tiny saved model (fast) and on the embedded one (slow)."""

from __future__ import annotations

import json

import pytest

from rain_search.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_templates_list_and_show(capsys) -> None:
    code, out, _ = run(capsys, "templates")
    assert code == 0
    assert out.splitlines()[0].startswith("harmless ")
    code, out, _ = run(capsys, "templates", "show", "truthful")
    assert code == 0 and "name: truthful" in out and "good_option:" in out


def test_generate_json_with_a_keyword_evaluator(capsys, model_dir) -> None:
    args = ["generate", "Say something.", "--model", model_dir, "--device", "cpu"]
    args += ["--preset", "fast", "--max-new-tokens", "6", "--evaluator", "avoid:e,a"]
    code, out, err = run(capsys, *args, "--embedder", "hidden", "--seed", "4", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["stats"]["mode"] == "rain" and 1 <= result["stats"]["completion_tokens"] <= 6
    assert not {"e", "a"} & set(result["text"])  # the keyword judge was obeyed
    assert result["stats"]["seed"] == 4
    assert "rain: step 1:" in err  # progress goes to stderr


def test_batch_budget_options_reach_the_generator(model_dir) -> None:
    from rain_search.cli import build_parser
    from rain_search.spec import GeneratorSpec

    argv = ["generate", "Hi", "--model", model_dir, "--device", "cpu", "--evaluator", "avoid:e"]
    args = build_parser().parse_args(
        [*argv, "--max-batch-rows", "3", "--max-batch-kv-tokens", "99"]
    )
    budget = GeneratorSpec.from_args(args)().scheduler.engine.budget
    assert budget is not None and (budget.rows, budget.kv_tokens) == (3, 99)


def test_generate_explain_prints_the_tree(capsys, model_dir, tmp_path) -> None:
    args = ["generate", "Say something.", "--model", model_dir, "--device", "cpu", "--quiet"]
    args += ["--preset", "fast", "--max-new-tokens", "4", "--evaluator", "avoid:e"]
    image = tmp_path / "tree.png"
    code, out, err = run(
        capsys, *args, "--embedder", "hidden", "--explain", "--explain-image", str(image)
    )
    assert code == 0
    assert "RAIN search:" in out and "✓ kept" in out
    assert image.stat().st_size > 1000 and "search tree drawn to" in err


def test_compare_prints_both_and_the_ratio(capsys, model_dir) -> None:
    args = ["compare", "Hi", "--model", model_dir, "--device", "cpu", "--preset", "fast"]
    code, out, _ = run(capsys, *args, "--max-new-tokens", "4", "--evaluator", "avoid:x", "--quiet")
    assert code == 0
    assert "=== vanilla ===" in out and "=== RAIN ===" in out
    assert "RAIN / vanilla wall time per committed token:" in out


def test_compare_reports_the_ratio_per_committed_token(capsys, model_dir) -> None:
    args = ["compare", "Hi", "--model", model_dir, "--device", "cpu", "--preset", "fast"]
    code, out, _ = run(capsys, *args, "--max-new-tokens", "4", "--evaluator", "avoid:x", "--json")
    assert code == 0
    report = json.loads(out)
    rain, vanilla = report["rain"]["stats"], report["vanilla"]["stats"]
    per_token = (rain["wall_time"] / rain["completion_tokens"]) / (
        vanilla["wall_time"] / vanilla["completion_tokens"]
    )
    assert report["wall_time_per_token_ratio"] == pytest.approx(per_token)
    assert report["wall_time_ratio"] == pytest.approx(rain["wall_time"] / vanilla["wall_time"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "  "], "the prompt is empty"),
        (["generate", "hi", "--evaluator", "oracle"], "unknown --evaluator 'oracle'"),
        (["generate", "hi", "--template", "nope"], "unknown template 'nope'"),
        (["generate", "hi", "--max-new-tokens", "0"], "max_new_tokens"),
        (["templates", "show", "nope.yaml"], "does not exist"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, model_dir, argv, message) -> None:
    options = ["--model", model_dir, "--device", "cpu", "--quiet"] if argv[0] != "templates" else []
    code, _, err = run(capsys, *argv, *options)
    assert code == 2
    assert err.startswith("rain: error:") and message in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_generate_on_the_embedded_model_with_self_evaluation(capsys) -> None:
    args = ["generate", "How can I get revenge on my neighbour?", "--preset", "fast"]
    code, out, err = run(capsys, *args, "--max-new-tokens", "12", "--json")
    assert code == 0
    stats = json.loads(out)["stats"]
    assert stats["completion_tokens"] == 12 and stats["evaluator_calls"] > 0
