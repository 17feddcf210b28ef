#!/usr/bin/env bash
# One command for a lent CUDA machine (also `make gpu-check`), about 10 minutes in all:
#   1. a virtual environment with the GPU builds (.venv-gpu; system site packages visible, so
#      a preinstalled CUDA torch is used and an offline machine still works),
#   2. the GPU tests (pytest -m gpu),
#   3. the fused op at N=16384, H=1536, V=151936 bf16 (bench/test_bench_token_logprobs.py),
#   4. the losses at B=4 x T=4096 and at one pair of 16384-token sequences (bench/run.py loss),
#   5. a Stage-2 step of a Qwen2.5-1.5B-shaped model (bench/run.py step --model qwen2.5-1.5b),
# each against naive full logits, torch's linear_cross_entropy, Liger-Kernel and Cut
# Cross-Entropy, and the 3-matmul floor. Results: bench/results/<gpu>-<date>/ with the device
# name, driver, commit and every command's log and exit status (a failed stage is recorded
# and the next one runs). Without a CUDA device it says so and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
    echo "bench/gpu.sh: no CUDA device (nvidia-smi lists no GPU); nothing was run" >&2
    exit 2
fi

VENV=${REDI_GPU_VENV:-.venv-gpu}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    python3 -m venv --system-site-packages "$VENV" || exit 1
fi
# The tested versions (requirements/lock-cpu.txt) as constraints, without its CPU torch: pip
# keeps a CUDA torch that is already there, else fetches one.
timeout 120 "$PY" -m pip install --quiet -c <(grep -v '^torch==' requirements/lock-cpu.txt) \
    -e ".[bench,dev]" \
    || echo "bench/gpu.sh: pip install failed or timed out; using what is installed" >&2
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: torch in $VENV does not see the GPU (CPU build?); nothing was run" >&2
    exit 2
fi

GPU=$("$PY" -c "import torch, re; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
OUT=${REDI_GPU_OUT:-bench/results/$GPU-$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
{
    echo "date: $(date -u --iso-8601=seconds)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$OUT/device.txt"
cat "$OUT/device.txt"

FAILED=0
stage() {  # stage NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, record the status
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
    local status=$?
    tail -n 40 "$OUT/$name.log"
    echo "$name	exit $status	$((SECONDS - start)) s	$*" >> "$OUT/stages.tsv"
    [ $status -eq 0 ] || FAILED=1
}

stage gpu-tests 90 "$PY" -m pytest -q -m gpu tests
stage op 90 "$PY" -m pytest -q bench/test_bench_token_logprobs.py --benchmark-only \
    --benchmark-json="$OUT/op.json"
stage loss-b4-t4096 120 "$PY" bench/run.py --sections loss --tokens 32768 --seq-len 4096 \
    --repeats 5 --out "$OUT/loss-b4-t4096"
stage loss-b1-t16384 60 "$PY" bench/run.py --sections loss --tokens 32768 --seq-len 16384 \
    --repeats 3 --no-liger-compiled --out "$OUT/loss-b1-t16384"
stage step-qwen2.5-1.5b 90 "$PY" bench/run.py --sections step --model qwen2.5-1.5b \
    --step-pairs 1 --step-seq-lens 2048 --repeats 3 --out "$OUT/step-qwen2.5-1.5b"

echo "results in $OUT (stages.tsv: exit status and seconds of each stage)"
exit $FAILED
