#!/usr/bin/env bash
# All GPU measurements in one go (under 5 minutes on one H100), one JSON line per figure.
# Run on a GPU machine after `make install` (with a CUDA torch) and `make demo` (for the shards):
#   bash benchmarks/gpu.sh 2>/dev/null | tee gpu-figures.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sed 's/^/{"gpu": "/; s/$/"}/'
# Perceiver IO, published 41M configuration: HF per pair, HF batched, SDPA batched, bf16 EPE
timeout 200 "$PY" benchmarks/flow.py --perceiver-config published --pairs 32 --cv-pairs 64 --batch-sizes 4 16 64
# training throughput: AAVS recipe vs ours (bf16, channels-last, fused AdamW, batch 4, compiled)
timeout 60 "$PY" benchmarks/train_throughput.py --batch 4 --steps 20 --compile
