"""The serving benchmark runs end to end on the tiny saved Llama (quick sizes)."""

from __future__ import annotations

import json

from benchmarks import serve


def test_quick_serving_benchmark_writes_its_report(model_dir, tmp_path, capsys) -> None:
    args = ["--quick", "--model", model_dir, "--device", "cpu", "--out", str(tmp_path)]
    assert serve.main(args) == 0
    report = json.loads((tmp_path / "serve-quick.json").read_text())
    (result,) = report["servers"].values()  # --quick: the single-process server only
    sequential = result["sequential"]
    assert sequential["requests"] == serve.QUICK["sequential"]
    assert [row["clients"] for row in result["rows"]] == serve.QUICK["clients"]
    for row in result["rows"]:
        assert row["concurrent"]["requests"] == row["clients"] * serve.QUICK["requests_per_client"]
        for key in ("requests_per_s", "tokens_per_s", "p50_s", "p95_s"):
            assert row["concurrent"][key] > 0
        assert row["concurrent"]["p95_s"] >= row["concurrent"]["p50_s"]
        ratio = row["concurrent"]["requests_per_s"] / sequential["requests_per_s"]
        assert row["speedup"] == ratio
    assert (tmp_path / "serve-quick.png").stat().st_size > 0
    assert "x one after another" in capsys.readouterr().out


def test_latency_percentiles() -> None:
    summary = serve.summarise([(float(s), 2) for s in range(1, 21)], wall=10.0)
    assert summary["p50_s"] == 10.5 and summary["p95_s"] == 19.0
    assert summary["requests_per_s"] == 2.0 and summary["tokens_per_s"] == 4.0
