#!/usr/bin/env bash
# Set up, then fine-tune the tiny 4-bit model on the sample data (CPU, no downloads), validate and predict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m suneung_lit fit --config configs/demo.yaml
.venv/bin/python -m suneung_lit validate --config configs/demo.yaml --ckpt_path checkpoints/demo/last.ckpt
.venv/bin/python -m suneung_lit predict --config configs/demo.yaml --ckpt_path checkpoints/demo/last.ckpt
echo "submission: predictions/demo/predictions.csv"
