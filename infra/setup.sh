#!/usr/bin/env bash
# One-command install: creates .venv, installs torch (pinned CPU wheel when there is no CUDA; an
# existing CUDA torch is kept), then faircalib in editable mode with its dev extras. Prints one summary
# line; everything pip says goes to .venv/setup.log (its tail is printed if a step fails).
#   bash infra/setup.sh            # dev install
#   EXTRAS=dev,postgres bash infra/setup.sh
#   VERBOSE=1 bash infra/setup.sh  # also show the log as it is written
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
LOG=.venv/setup.log
: > "$LOG"
step="start"
run() {  # run "what" cmd...: append the command's output to the log (and to the terminal with VERBOSE=1)
  step=$1; shift
  echo "[setup] $step: $*" >> "$LOG"
  if [ -n "${VERBOSE:-}" ]; then "$@" 2>&1 | tee -a "$LOG"; else "$@" >> "$LOG" 2>&1; fi
}
trap 'echo "[setup] failed while: $step (exit $?); last lines of $LOG:" >&2; tail -n 25 "$LOG" >&2' ERR

run "upgrading pip" "$PY" -m pip install -q --upgrade pip setuptools wheel

torch_state=$("$PY" - <<'PYEOF'
try:
    import torch
    print("cuda" if torch.version.cuda else "cpu")
except Exception:
    print("none")
PYEOF
)
torch_note="torch kept"
if has_cuda; then
  if [ "$torch_state" != "cuda" ]; then
    run "installing the default (CUDA) torch wheel" "$PY" -m pip install -q torch
    torch_note="installed the CUDA wheel"
  fi
elif [ "$torch_state" = "none" ]; then
  run "installing $CPU_TORCH (no CUDA: the CPU wheel, not GBs of CUDA ones)" "$PY" -m pip install -q \
    "$CPU_TORCH"
  torch_note="installed the CPU wheel"
fi

run "installing faircalib[$EXTRAS] (editable)" "$PY" -m pip install -q -e ".[${EXTRAS}]"
step="checking the install"
summary=$("$PY" -c "import faircalib, faircalib.orchestrator, faircalib.workers, faircalib.kernels, torch
print(f'faircalib {faircalib.__version__}, torch {torch.__version__} ({\"CUDA\" if torch.cuda.is_available() else \"CPU\"}')" 2>>"$LOG")
echo "[setup] $summary; $torch_note) in .venv in $(( $(date +%s) - t0 ))s; activate: source .venv/bin/activate; log: $LOG"
