#!/usr/bin/env bash
# One-command install: creates .venv, installs torch (pinned CPU wheel when there is no CUDA; an
# existing CUDA torch is kept), then faircalib in editable mode with its dev extras.
#   bash infra/setup.sh            # dev install
#   EXTRAS=dev,postgres bash infra/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
CPU_TORCH=${CPU_TORCH:-torch==2.13.0}
t0=$(date +%s)

has_cuda() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if [ ! -x .venv/bin/python ]; then
  if has_cuda; then
    # See a system-wide CUDA torch (e.g. a cluster image's) instead of replacing it.
    "$PYTHON" -m venv --system-site-packages .venv
  else
    "$PYTHON" -m venv .venv
  fi
fi
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip setuptools wheel

torch_state=$("$PY" - <<'PYEOF'
try:
    import torch
    print("cuda" if torch.version.cuda else "cpu")
except Exception:
    print("none")
PYEOF
)
if has_cuda; then
  if [ "$torch_state" = "cuda" ]; then
    echo "[setup] keeping the installed CUDA torch ($("$PY" -c 'import torch; print(torch.__version__)'))"
  else
    echo "[setup] CUDA present: installing the default (CUDA) torch wheel"
    "$PY" -m pip install -q torch
  fi
elif [ "$torch_state" = "none" ]; then
  echo "[setup] no CUDA: installing $CPU_TORCH first (avoids GBs of CUDA wheels)"
  "$PY" -m pip install -q "$CPU_TORCH"
else
  echo "[setup] keeping the installed torch ($("$PY" -c 'import torch; print(torch.__version__)'))"
fi

"$PY" -m pip install -q -e ".[${EXTRAS}]"
"$PY" -c "import faircalib, faircalib.orchestrator, faircalib.workers, faircalib.kernels, torch; print('[setup] faircalib', faircalib.__version__, 'torch', torch.__version__)"
echo "[setup] done in $(( $(date +%s) - t0 ))s; activate with: source .venv/bin/activate"
