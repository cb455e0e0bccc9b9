#!/usr/bin/env bash
# The GPU check in one command: encode, classify, fine-tune and serving figures for ViT-B-32 (random weights) on
# CUDA, one table, under 5 minutes (bench/gpu_check.py says what each figure is). Without CUDA: one line, exit 3.
#   bench/gpu_check.sh                          # on a GPU machine
#   bench/gpu_check.sh --device cpu --small     # smoke test of the script on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" bench/gpu_check.py "$@"
