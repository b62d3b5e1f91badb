#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md in one go (PixelRefer-2B shapes, random weights, bfloat16; about
# 5-8 minutes on an H100/H200). Needs the package installed with a CUDA torch (`pip install torch` then
# `pip install -e .`); prints the tables, and writes them to ${OUT:-benchmarks/gpu-results}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/gpu-results}
mkdir -p "$out"
common=(--config 2b --device cuda --dtype bfloat16)
python benchmarks/saot.py "${common[@]}" --repeats 10 | tee "$out/saot.md"
# Targets: batch 16 vs the batch-1 loop, and 1 region x 64 new tokens per sample amortised at batch 16.
python benchmarks/generate.py "${common[@]}" --media images --regions 1 --samples 16 --batch-sizes 1,16 \
    --new-tokens 64 --decode-regions 1,8,32 --attn sdpa --compile | tee "$out/generate_1region.md"
python benchmarks/generate.py "${common[@]}" --samples 16 --batch-sizes 1,4,16 --new-tokens 32 \
    --decode-regions 1 --attn eager,sdpa | tee "$out/generate_mixed.md"
python benchmarks/lite_vs_full.py "${common[@]}" | tee "$out/lite_vs_full.md"
python benchmarks/caption.py "${common[@]}" | tee "$out/caption.md"
