#!/usr/bin/env bash
# All GPU measurements in one go (3 minutes on one H100 from a bare machine, before the folded rows), one JSON line per figure on stdout,
# progress and warnings on stderr. Needs a CUDA torch and the project's packages (`make install`
# on a GPU machine, or PYTHONPATH=src with the requirements installed); no shards, no weights:
#   bash benchmarks/gpu.sh 2>gpu.log | tee gpu-figures.jsonl
# PYTHON picks the interpreter (default .venv/bin/python); FRAMES the real frames of the flow
# accuracy figures (a video or an .npz with `frames`; default ../shared/media/chaplin.mp4).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
FRAMES=${FRAMES:-../shared/media/chaplin.mp4}
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}src"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/{"gpu": "/; s/$/"}/'
"$PY" -c 'import json, torch, transformers; print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))'
# Perceiver IO, published 41M configuration, random weights: accuracy of the fast path on real
# frames; Hugging Face forward per pair and batched (fp32); our two paths (sdpa, folded) batched, bf16 and fp16 (their
# fp32 runs at the Hugging Face fp32 speed: benchmarks/results/h100-run1.jsonl); where the time
# goes; at the paper's 368x496 and at AVSBench's 224x224 (two tiles per pair).
timeout 240 "$PY" benchmarks/flow.py --perceiver-config published --frames "$FRAMES" --skip-opencv \
    --sizes 368x496 224x224 --pairs 96 --hf-pairs 16 --hf-batch-sizes 1 4 8 --breakdown \
    --batch-sizes 8 32 --dtypes bfloat16 float16 --attentions sdpa folded || echo '{"error": "flow benchmark failed or timed out"}'
# Training throughput, the paper's network (Swin-B, 384 px, random weights), random 5-frame
# videos from memory: the AAVS recipe against the trainer's settings at 2 (the paper's), 4 and 8
# videos per step, then channels-last. (--compile adds a compiled row; compiling the network
# took over 150 s on an H100, so it is left out here.)
timeout 200 "$PY" benchmarks/train_throughput.py --model paper --data synthetic --batch 2 4 8 --steps 10 --warmup 3 \
    || echo '{"error": "training benchmark failed or timed out"}'
# The same with AAVS's adapters (train.tune: adapters, the paper's configs) in every setting, the
# AAVS recipe included, in phase 2 (Swin adapters trained: back-propagation through the whole backbone).
timeout 150 "$PY" benchmarks/train_throughput.py --model paper --data synthetic --batch 2 8 --steps 10 --warmup 3 \
    --tune adapters-phase2 || echo '{"error": "adapters training benchmark failed or timed out"}'
