"""The serving benchmark runs end to end on the tiny saved Llama (quick sizes)."""

from __future__ import annotations

import json

import pytest

from benchmarks import serve

KINDS = ("concurrent", "sequential")


def test_quick_serving_benchmark_writes_its_report(model_dir, tmp_path, capsys) -> None:
    args = ["--quick", "--model", model_dir, "--device", "cpu", "--out", str(tmp_path)]
    assert serve.main(args) == 0
    report = json.loads((tmp_path / "serve-quick.json").read_text())
    (rows,) = report["servers"].values()  # --quick: the single-process server only
    assert [row["clients"] for row in rows] == serve.QUICK["clients"]
    for row in rows:
        assert row["concurrent"]["requests"] == row["clients"] * serve.QUICK["requests_per_client"]
        assert row["sequential"]["requests"] == row["concurrent"]["requests"]
        for key in ("requests_per_s", "tokens_per_s", "p50_s", "p95_s"):
            assert row["concurrent"][key] > 0
        assert row["concurrent"]["p95_s"] >= row["concurrent"]["p50_s"]
        assert row["speedup"] == row["sequential"]["wall_s"] / row["concurrent"]["wall_s"]
        # the baseline ran the same seeds: the same answers, so the same tokens
        tokens = [row[kind]["tokens_per_s"] * row[kind]["wall_s"] for kind in KINDS]
        assert tokens[0] == pytest.approx(tokens[1])
    assert (tmp_path / "serve-quick.png").stat().st_size > 0
    assert "x one after another" in capsys.readouterr().out


def test_latency_percentiles() -> None:
    summary = serve.summarise([(float(s), 2) for s in range(1, 21)], wall=10.0)
    assert summary["p50_s"] == 10.5 and summary["p95_s"] == 19.0
    assert summary["requests_per_s"] == 2.0 and summary["tokens_per_s"] == 4.0


def test_the_soak_benchmark_samples_the_servers_memory(model_dir, tmp_path, capsys) -> None:
    from benchmarks import soak

    args = ["--requests", "10", "--concurrency", "2", "--max-tokens", "4", "--sample-every", "5"]
    assert soak.main([*args, "--model", model_dir, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "soak.json").read_text())
    assert [s["requests"] for s in report["samples"]] == [0, 5, 10]
    assert all(s["rss_mb"] > 0 for s in report["samples"])
    # requests 4 and 9 are streams (9 left after its first chunk); the rest plain
    assert report["outcomes"] == {"200": 8, "stream": 1, "disconnected": 1}
    assert report["settings"]["heap_trimmed"] is True
    assert "growth per quarter" in capsys.readouterr().out


def test_soak_summary_gives_growth_per_quarter() -> None:
    from benchmarks import soak

    samples = [{"requests": i, "rss_mb": 100.0 + 10 * i, "t_s": i} for i in range(9)]
    summary = soak.summarise(samples)
    assert summary["start_mb"] == 100 and summary["end_mb"] == 180 and summary["peak_mb"] == 180
    assert [summary[f"growth_q{q}_mb"] for q in range(1, 5)] == [20, 20, 20, 20]
