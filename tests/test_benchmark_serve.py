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
