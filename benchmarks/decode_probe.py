"""Plain decoding speed by dtype and attention kernel: why was bf16 slower than fp32 on a GPU?

    python -m benchmarks.decode_probe --device cuda --out /tmp/probe

Issue 30 measured ``model.generate`` on an H200 at 56.8 ms/token in bfloat16
against 21.7 in float32 (64 rows: 608 vs 2,873 tokens/s). For each attention
implementation (``eager``, ``sdpa``) and dtype (float32, bfloat16, loaded as
the benchmarks do: float32, then ``model.to(dtype)``) this times greedy
``model.generate`` on one row and on 64 rows, after a warm-up whose time is
reported apart (a first call pays cuBLAS and kernel selection), and profiles a
few one-row decoding steps: the operators with the most host and device time,
which is where a slow dtype shows why. A step's time is the call's time less
that of a one-token call (the prompt's forward call), over the other steps.
Results go to ``decode_probe.json``, rewritten after each configuration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import bench_parser, machine, now, table, write_json
from rain_search.models import load_model

PROMPT = "Explain how a refrigerator keeps food cold."


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per timed call")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    parser.add_argument("--profile-steps", type=int, default=8, help="0: no profile")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "started": now(), "rows": []}
    report["profiles"] = {}
    for attn in args.attn:
        for dtype in args.dtypes:
            try:
                model, tokenizer = load_model(
                    args.model, device=args.device, attn_implementation=attn, reuse=False
                )
            except Exception as error:  # noqa: BLE001 - an unsupported kernel is a finding
                report["rows"].append({"attn": attn, "dtype": dtype, "error": repr(error)})
                print(f"[{now()}] {attn}: {error!r}", flush=True)
                continue
            model = model.to(getattr(torch, dtype))
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer.encode(text, add_special_tokens=False)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            weights = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
            for rows in args.rows:
                row = {"attn": attn, "dtype": dtype, "rows": rows, "weights": weights}
                row["attn_used"] = getattr(model.config, "_attn_implementation", None)
                row |= timed_generate(model, ids, rows, args.tokens, pad)
                report["rows"].append(row)
                print(
                    f"[{now()}] {attn} {dtype} {rows} rows: {row['ms_per_step']:.1f} ms/step, "
                    f"{row['tokens_per_s']:.0f} tokens/s, prefill {row['prefill_ms']:.0f} ms "
                    f"(first call {row['first_call_s']:.2f} s)",
                    flush=True,
                )
            if args.profile_steps:
                report["profiles"][f"{attn}-{dtype}"] = profile(model, ids, args.profile_steps, pad)
            write_json("decode_probe", report, args.out)  # what is done survives a time limit
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    path = write_json("decode_probe", report, args.out)
    print_report(report)
    print(f"\nwrote {path}")
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(model: Any, ids: list[int], rows: int, tokens: int, pad: int) -> Any:
    input_ids = torch.tensor([ids] * rows, device=model.device)
    return model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        pad_token_id=pad,
        temperature=None,
        top_p=None,
        top_k=None,
    )


@torch.inference_mode()
def timed_generate(
    model: Any, ids: list[int], rows: int, tokens: int, pad: int
) -> dict[str, float]:
    """Greedy generation of ``tokens`` on ``rows`` copies of ``ids``: a warm-up, then timed."""
    first = _timed(model, ids, rows, 4, pad)
    prefill = _timed(model, ids, rows, 1, pad)  # the prompt's forward call and one token
    wall = _timed(model, ids, rows, tokens, pad)
    decode = max(wall - prefill, 1e-9)
    return {
        "first_call_s": first,
        "prefill_ms": prefill * 1000,
        "ms_per_step": decode / (tokens - 1) * 1000,
        "tokens_per_s": (tokens - 1) * rows / decode,
        "wall_tokens_per_s": tokens * rows / wall,
    }


def _timed(model: Any, ids: list[int], rows: int, tokens: int, pad: int) -> float:
    _sync(model.device)
    start = time.perf_counter()
    out = _generate(model, ids, rows, tokens, pad)
    _sync(model.device)
    assert out.shape[1] - len(ids) == tokens
    return time.perf_counter() - start


@torch.inference_mode()
def profile(model: Any, ids: list[int], steps: int, pad: int) -> dict[str, Any]:
    """Top operators by host and by device time over one row's ``steps`` decoding steps."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = model.device.type == "cuda"
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    _generate(model, ids, 1, 2, pad)
    with torch.profiler.profile(activities=activities) as prof:
        _generate(model, ids, 1, steps, pad)
        _sync(model.device)
    events = prof.key_averages()

    def top(key: str) -> list[dict[str, Any]]:
        ranked = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:10]
        return [
            {"op": e.key, "calls": e.count, "ms": getattr(e, key, 0) / 1000 / steps}
            for e in ranked
            if getattr(e, key, 0) > 0
        ]

    out = {"steps": steps, "host_self_ms_per_step": top("self_cpu_time_total")}
    if cuda:
        out["device_self_ms_per_step"] = top("self_device_time_total")
        kernels = sum(e.count for e in events if getattr(e, "self_device_time_total", 0) > 0)
        out["device_ops_per_step"] = kernels / steps
    return out


def print_report(report: dict[str, Any]) -> None:
    print("\nplain greedy decoding:")
    columns = ["attn", "attn_used", "dtype", "rows", "ms_per_step", "tokens_per_s"]
    columns += ["prefill_ms", "first_call_s", "weights", "error"]
    print(table(report["rows"], columns))
    for name, part in report["profiles"].items():
        print(f"\n{name}: host time per step (ms), top operators:")
        print(table(part["host_self_ms_per_step"][:6], ["op", "calls", "ms"]))
        if "device_self_ms_per_step" in part:
            print(f"{name}: device time per step (ms):")
            print(table(part["device_self_ms_per_step"][:6], ["op", "calls", "ms"]))


if __name__ == "__main__":
    raise SystemExit(main())
