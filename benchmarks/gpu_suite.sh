#!/usr/bin/env bash
# The GPU validation suite (issues 12 and 17): benchmarks/kernels.py (kernel correctness, W4A4 GEMM vs bf16,
# fused quantizer, block latency, checkpoint memory), then benchmarks/gpu_suite.py (int8 _int_mm reference,
# exactness on every shape, quantizer vs copy bandwidth, block resident memory, one full-width LLaDA-8B
# block's Stage II at 128 x 1024 tokens, Stage I rollout throughput). One JSON under benchmarks/results/gpu/
# named after the device (with device name, torch / Triton / CUDA versions).
#
#   bash benchmarks/gpu_suite.sh            # CUDA when available (under 8 minutes), else the CPU mode
#   bash benchmarks/gpu_suite.sh --cpu      # CPU mode: the same code at tiny sizes (Triton interpreter)
#
# Environment: PYTHON (default: python), OUT_DIR (default: benchmarks/results/gpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-benchmarks/results/gpu}"
MODE="$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT_DIR"
start=$(date +%s)
if [ "$MODE" = cuda ]; then
  KERNEL_ARGS=(--json); SUITE_ARGS=(--budget-s 250); KT=200; ST=260
else
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  KERNEL_ARGS=(--json --speed-smoke --skip-memory); SUITE_ARGS=(--tiny --budget-s 250); KT=200; ST=260
fi
echo "[gpu_suite.sh] mode=$MODE: benchmarks/kernels.py ..." >&2
if ! timeout "$KT" "$PY" benchmarks/kernels.py "${KERNEL_ARGS[@]}" > "$TMP/kernels.json"; then
  echo '{"error": "benchmarks/kernels.py failed or timed out"}' > "$TMP/kernels.json"
fi
echo "[gpu_suite.sh] benchmarks/gpu_suite.py ..." >&2
timeout "$ST" "$PY" benchmarks/gpu_suite.py "${SUITE_ARGS[@]}" --kernels "$TMP/kernels.json" --out-dir "$OUT_DIR" \
  > "$TMP/suite.json"
echo "[gpu_suite.sh] done in $(( $(date +%s) - start ))s: $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["out"])' "$TMP/suite.json")" >&2
