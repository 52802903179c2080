"""``rain batch``: every row answered or reported once, bad rows not fatal, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rain_integrations.batch import run_local
from rain_search.cli import main

GOOD = [
    {"id": "a", "prompt": "Say hi.", "rain": {"max_new_tokens": 4, "seed": 3}},
    {"messages": [{"role": "user", "content": "Count."}], "system": "Be brief."},
    {"id": 7, "prompt": "Tell me a story", "rain": {"preset": "fast", "max_new_tokens": 3}},
]
BAD = [
    ("{not json", "not valid JSON"),
    ('["a list"]', "must be a JSON object"),
    ('{"system": "no prompt"}', "exactly one of 'prompt'"),
    ('{"prompt": "x", "colour": "red"}', "unknown key(s) ['colour']"),
    ('{"prompt": "x", "rain": {"num_children": 0}}', "num_children"),
    ('{"prompt": "x", "rain": {"bogus": 1}}', "unknown RAIN setting(s) ['bogus']"),
    ('{"id": "a", "prompt": "again"}', "id 'a' repeats line 1"),
    ('{"prompt": "bad \\ud800"}', "lone surrogate"),
]


def write_rows(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_good_rows_are_answered_and_bad_rows_reported_by_line(generator, tmp_path) -> None:
    lines = [json.dumps(row) for row in GOOD] + [""] + [text for text, _ in BAD]
    source = write_rows(tmp_path / "prompts.jsonl", lines)
    summary = run_local(generator, source, tmp_path / "out")
    assert (summary.answered, summary.errors, summary.skipped) == (3, len(BAD), 0)
    results = sorted(read(tmp_path / "out" / "results.jsonl"), key=lambda r: r["line"])
    assert [(r["id"], r["line"]) for r in results] == [("a", 1), (2, 2), (7, 3)]
    assert results[0]["stats"]["seed"] == 3 and results[0]["completion_tokens"] <= 4
    assert results[2]["completion_tokens"] <= 3
    assert all(r["finish_reason"] in ("eos", "stop", "length") and "text" in r for r in results)
    errors = read(tmp_path / "out" / "errors.jsonl")
    assert [e["line"] for e in errors] == list(range(5, 5 + len(BAD)))  # line 4 is blank
    for error, (_, expected) in zip(errors, BAD, strict=True):
        assert expected in error["error"]


def test_a_stopped_run_resumes_without_losing_or_repeating_rows(generator, tmp_path) -> None:
    rows = [
        json.dumps({"prompt": f"Question {i}", "rain": {"max_new_tokens": 2}}) for i in range(8)
    ]
    source = write_rows(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out"

    def stop_after_three(row, summary) -> None:
        if summary.answered == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(generator, source, out, on_row=stop_after_three)
    with (out / "results.jsonl").open("a") as torn:  # a kill in the middle of a write
        torn.write('{"id": 4, "line": 4, "te')
    summary = run_local(generator, source, out)
    assert (summary.answered, summary.skipped) == (5, 3)
    assert sorted(r["line"] for r in read(out / "results.jsonl")) == list(range(1, 9))
    again = run_local(generator, source, out)
    assert (again.answered, again.errors, again.skipped) == (0, 0, 8)


def test_the_cli_runs_a_batch_and_says_what_it_did(model_dir, tmp_path, capsys) -> None:
    source = write_rows(tmp_path / "p.jsonl", [json.dumps(GOOD[0]), "{bad"])
    args = ["batch", str(source), str(tmp_path / "out"), "--model", model_dir, "--device", "cpu"]
    assert main([*args, "--preset", "fast", "--evaluator", "avoid:e", "--embedder", "hidden"]) == 0
    err = capsys.readouterr().err
    assert "1 answered, 1 errors, 0 already done" in err
    assert main([*args, "--preset", "fast", "--evaluator", "avoid:e", "--quiet"]) == 0
    assert "0 answered, 0 errors, 2 already done" in capsys.readouterr().err
    missing = ["batch", str(tmp_path / "nope.jsonl"), str(tmp_path / "o"), "--model", model_dir]
    assert main([*missing, "--evaluator", "avoid:e", "--embedder", "hidden", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_killed_process_loses_no_row_and_repeats_none(model_dir, tmp_path) -> None:
    """SIGKILL half way through, then run again: every line once in the results."""
    rows = [json.dumps({"prompt": f"Tell me a story {i}"}) for i in range(10)]
    source = write_rows(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rain_search.cli", "batch", str(source), str(out)]
    command += ["--model", model_dir, "--device", "cpu", "--preset", "fast", "--quiet"]
    command += ["--evaluator", "avoid:e", "--embedder", "hidden", "--max-new-tokens", "48"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(read_lines(out / "results.jsonl")) < 2:
        assert job.poll() is None, job.stderr.read().decode()[-2000:] if job.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    first = len(read_lines(out / "results.jsonl"))
    assert first < 10, "the job finished before it could be killed; make the rows longer"
    subprocess.run(command, env=env, check=True, timeout=300)
    assert sorted(r["line"] for r in read(out / "results.jsonl")) == list(range(1, 11))


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_rows_are_searched_together_within_the_window_and_answer_as_alone(
    generator, tmp_path, monkeypatch
) -> None:
    rows = [{"id": i, "prompt": f"Question {i}", "rain": {"max_new_tokens": 4}} for i in range(10)]
    source = write_rows(tmp_path / "prompts.jsonl", [json.dumps(row) for row in rows])
    opened, written, live = [], [], []
    stream = generator.stream

    def counted(*args, **kwargs):
        opened.append(args[0])
        live.append(len(opened) - len(written))
        return stream(*args, **kwargs)

    monkeypatch.setattr(generator, "stream", counted)
    summary = run_local(
        generator,
        source,
        tmp_path / "out",
        in_flight=4,
        on_row=lambda line, s: written.append(line),
    )
    assert summary.answered == 10 and max(live) == 4  # four at once, never more
    alone = {row["id"]: stream(row["prompt"], max_new_tokens=4) for row in rows}
    for record in read(tmp_path / "out" / "results.jsonl"):
        expected = alone[record["id"]]
        for _ in expected:
            pass
        assert record["text"] == expected.result.text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "none.jsonl", d / "out"), "does not exist"),
        (lambda d: (d, d / "out"), "is not a file"),
        (lambda d: (d / "p.jsonl", d / "p.jsonl" / "out"), "cannot create the output folder"),
        (lambda d: (d / "p.jsonl", d / "p.jsonl"), "is a file, not a folder"),
        (
            lambda d: (d / "p.jsonl", (d / "o" / "results.jsonl").mkdir(parents=True) or d / "o"),
            "results.jsonl",
        ),
    ],
)
def test_bad_paths_are_one_line_errors_before_the_model_loads(
    setup, message, tmp_path, monkeypatch, capsys
) -> None:
    from rain_search.cli import GeneratorSpec

    def no_loading(self):
        raise AssertionError("the model was loaded before the paths were checked")

    monkeypatch.setattr(GeneratorSpec, "__call__", no_loading)
    write_rows(tmp_path / "p.jsonl", [json.dumps(GOOD[0])])
    source, out = setup(tmp_path)
    assert main(["batch", str(source), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rain: error: ") and message in err and err.count("\n") == 1, err


def refuse_to_load(monkeypatch) -> None:
    """Make loading a model fail the test: these runs must end before one loads."""
    from rain_search.cli import GeneratorSpec

    def no_loading(self):
        raise AssertionError("the model was loaded for a job that needed none")

    monkeypatch.setattr(GeneratorSpec, "__call__", no_loading)


RESULT = '{"id": 1, "line": 1, "text": "done"}'


@pytest.mark.parametrize(
    ("source", "results", "message"),
    [
        ("out/results.jsonl", [RESULT], "is the output folder's own results.jsonl"),
        ("out/errors.jsonl", [], "is the output folder's own errors.jsonl"),
        ("p.jsonl", [RESULT, '{"id": 2, "li', RESULT], "line 2 of "),
        ("p.jsonl", ['{"prompt": "a results.jsonl that holds prompts"}'], "names no input 'line'"),
        ("p.jsonl", [RESULT, '{"id": 2, "line": true}'], "line 2 of "),
    ],
)
def test_a_damaged_or_reused_output_is_a_one_line_error_before_the_model_loads(
    source, results, message, tmp_path, monkeypatch, capsys
) -> None:
    refuse_to_load(monkeypatch)
    write_rows(tmp_path / "p.jsonl", [json.dumps(GOOD[0]), json.dumps(GOOD[1])])
    (tmp_path / "out").mkdir()
    write_rows(tmp_path / "out" / "results.jsonl", results)
    write_rows(tmp_path / "out" / "errors.jsonl", [])
    before = (tmp_path / "out" / "results.jsonl").read_bytes()
    assert main(["batch", str(tmp_path / source), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rain: error: ") and message in err and err.count("\n") == 1, err
    assert "another" in err  # the fix: another folder (or the line to delete)
    assert (tmp_path / "out" / "results.jsonl").read_bytes() == before  # nothing rewritten


def test_a_job_with_nothing_left_to_answer_ends_without_a_model(
    tmp_path, monkeypatch, capsys
) -> None:
    """Answered rows are skipped, bad rows reported, a torn last line repaired: no model."""
    refuse_to_load(monkeypatch)
    source = write_rows(tmp_path / "p.jsonl", [json.dumps(GOOD[0]), "{bad"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text(RESULT + '\n{"id": 9, "line": 9, "te', encoding="utf-8")
    assert main(["batch", str(source), str(out)]) == 0
    err = capsys.readouterr().err
    assert "dropped the last line of" in err and "cut short" in err
    assert "0 answered, 1 errors, 1 already done" in err
    assert [e["line"] for e in read(out / "errors.jsonl")] == [2]
    assert read(out / "results.jsonl") == [json.loads(RESULT)]
    assert main(["batch", str(source), str(out), "--quiet"]) == 0
    assert "0 answered, 0 errors, 2 already done" in capsys.readouterr().err


HEAVY = "print(sorted({'torch', 'transformers', 'ray', 'fastapi'} & set(sys.modules)))"


def run_probe(code: str) -> list[str]:
    """Lines printed by ``code`` in a fresh interpreter (so imports can be counted)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip().splitlines()


def test_batch_help_imports_neither_torch_nor_transformers() -> None:
    """``rain batch --help`` answers at once: the heavy libraries load only to run a job."""
    probe = (
        "import sys\nfrom rain_search.cli import main\ntry:\n    main(['batch', '--help'])\n"
        f"except SystemExit:\n    pass\n{HEAVY}"
    )
    lines = run_probe(probe)
    assert any("results.jsonl and errors.jsonl" in line for line in lines)  # the help
    assert lines[-1] == "[]", lines[-5:]


def test_a_finished_job_reruns_without_importing_torch(tmp_path) -> None:
    source = write_rows(tmp_path / "p.jsonl", [json.dumps(GOOD[0]), "{bad"])
    (tmp_path / "out").mkdir()
    write_rows(tmp_path / "out" / "results.jsonl", [RESULT])
    write_rows(tmp_path / "out" / "errors.jsonl", ['{"id": null, "line": 2, "error": "x"}'])
    argv = ["batch", str(source), str(tmp_path / "out"), "--quiet"]
    lines = run_probe(
        f"import sys\nfrom rain_search.cli import main\nprint(main({argv!r}))\n{HEAVY}"
    )
    assert lines == ["0", "[]"]
