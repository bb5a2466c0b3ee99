#!/usr/bin/env bash
# Issue 8 item 8: the trainer benchmark and a short learning run on a CUDA GPU, with the GPU named.
#
#   bench/gpu.sh                      # from the repository root, in an environment with hotlap's deps
#   PYTHON=.venv/bin/python LEARN_BUDGET_S=180 bench/gpu.sh
#
# 1. bench/trainer.py --device cuda: ppo_update vs a bare PyTorch loop vs the GPU's fp32 matmul FLOP/s,
#    per network (bench/results/trainer-gpu.json);
# 2. bench/learn.py: `hotlap train` (HOTLAP_DEVICE=cuda for the trainer) with the default reward and
#    action space on reinvent_base, then greedy trials of every version: time to 3/3 laps (target there
#    <= 15 s); then the pace reward with the 4 m/s action spaces: best lap (target <= 10 s in <= 3 min)
#    (bench/results/learn-gpu.json, learn-gpu.png).
# Exits 2 with a message when no CUDA GPU is visible: the project builds and tests without one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
LEARN_BUDGET_S=${LEARN_BUDGET_S:-180}
WORKERS=${WORKERS:-$(( $(nproc) > 4 ? $(nproc) / 2 : 2 ))}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi --query-gpu=name --format=csv,noheader >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA GPU here (nvidia-smi missing or failing); nothing to measure." >&2
    echo "  Run bench/trainer.py and bench/learn.py for the CPU numbers." >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: a GPU is visible ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)) but" \
         "this torch ($("$PYTHON" -c 'import torch; print(torch.__version__)')) has no CUDA; install the CUDA" \
         "build (infra/torch-requirements-cuda.txt)." >&2
    exit 2
fi
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
echo "== GPU: $GPU; $(nproc) CPU cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== trainer benchmark (--device cuda)"
"$PYTHON" bench/trainer.py --device cuda --steps 4096 --epochs 3 --repeats 3 --matmul-size 8192 \
    --options --json bench/results/trainer-gpu.json

echo "== learning: default reward and actions, then the pace reward with 4 m/s actions (${LEARN_BUDGET_S}s each)"
HOTLAP_DEVICE=cuda "$PYTHON" bench/learn.py --rewards centerline --workers "$WORKERS" \
    --budget-s "$LEARN_BUDGET_S" --json bench/results/learn-gpu.json --png bench/results/learn-gpu.png \
    -- --cars-per-worker 8
HOTLAP_DEVICE=cuda "$PYTHON" bench/learn.py --rewards pace --fast-lap --workers "$WORKERS" \
    --budget-s "$LEARN_BUDGET_S" --json bench/results/learn-fast-gpu.json --png bench/results/learn-fast-gpu.png \
    -- --cars-per-worker 8
echo "== done on $GPU; results in bench/results/*-gpu.json"
