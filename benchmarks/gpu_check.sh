#!/usr/bin/env bash
# Every GPU benchmark row in one run, meant to finish in under 8 minutes on one H100/H200, most important first.
# Leaves gpu_check.log and the appended benchmarks/RESULTS.md in $OUT. On the device machine, from the repo root:
#   here:   bash ../shared/device/prepare.sh && mkdir -p .devdata && cp ../shared/data/generationfornlp/*.csv .devdata/
#           (echo /.devdata/ >> .git/info/exclude), then carry [".devsite", ".devdata"] and run
#   there:  export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1; bash benchmarks/gpu_check.sh
# Gemma 3 270M (536 MB) cannot travel within the device tool's 64 MiB, so the accuracy harness runs only where
# artifacts/gemma-3-270m already exists. Step limits are generous guesses: this script has not run on a GPU yet.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_DIR:-.devdata}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
log="$OUT/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$log"
python3 -m suneung_lit.tiny artifacts/tiny-qwen2 >/dev/null  # the Qwen2.5 tokenizer the presets use

step() {  # step SECONDS SCRIPT ARGS...: one benchmark, logged, stopped at its limit without stopping the others
  local limit=$1; shift
  echo "== $* (limit ${limit}s)" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" python3 "$@" --data-dir "$DATA" 2>&1 | grep -v "it/s\]" | tee -a "$log" | tail -n 12
  echo "== exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$log"
}

# 32B-shaped NF4 predict over all 869 test rows (target: <= 120 s), ours only.
step 330 benchmarks/predict_speed.py --preset qwen2.5-32b --rows 869 --max-length 2048 --batch-size 16 --skip-baseline
# 7B side by side with the batch-1 full-logits baseline.
step 150 benchmarks/predict_speed.py --preset qwen2.5-7b --rows 48 --max-length 2048 --batch-size 16
# 32B training step memory, answer-position logits vs full logits.
step 240 benchmarks/train_memory.py --preset qwen2.5-32b --lengths 1024 2048 --batch-size 1 --gradient-checkpointing
# Prefix reuse side by side on the test file (7B shape).
step 150 benchmarks/prefix_reuse.py --preset qwen2.5-7b --rows 300 --max-length 2048
if [ -f artifacts/gemma-3-270m/config.json ]; then
  step 300 benchmarks/accuracy.py --mode full
fi
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
