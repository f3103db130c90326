#!/usr/bin/env bash
# Every GPU benchmark row in one device-machine call, most important first, inside a total time budget
# (BUDGET_S, default 470 s: the device tool allows 600 s a command and 15 minutes a session, start included).
# First run: NVIDIA H100, 2026-11-26, 538 s with BUDGET_S=555 (results in benchmarks/logs and RESULTS.md).
# Leaves gpu_check.log and the appended RESULTS.md in $OUT after every step, so a cut-off run still reports.
#   here:   bash ../shared/device/prepare.sh && mkdir -p .devdata && cp ../shared/data/generationfornlp/*.csv .devdata/
#           (echo /.devdata/ >> .git/info/exclude), optionally bash benchmarks/unsloth_site.sh (unsloth beside
#           ours in train7b), then carry [".devsite", ".devdata", ".unsloth.zip"] (about 52 MB with the tree) and run
#   there:  export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1; bash benchmarks/gpu_check.sh
# Gemma 3 270M (536 MB) cannot travel within the device tool's 64 MiB, so the accuracy harness runs only where
# artifacts/gemma-3-270m already exists.
# STEPS="name ..." runs some steps, in that order (names below). What issues 33 and 37 still need (15 device
# minutes a session, the start included; a call may run 600 s), first with unsloth's .unsloth.zip carried:
#   STEPS="train7b fsdp7b" BUDGET_S=500 bash benchmarks/gpu_check.sh
# then, at once on the warm machine (it goes back after 30 s idle), with what is left:
#   STEPS="debias7b prefix32b" ROWS=128 BUDGET_S=... bash benchmarks/gpu_check.sh
# (the 32B training rows exist, of 2026-11-26; unsloth's 32B would need a 65 GB bf16 folder on a 64 GiB disk).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA_DIR:-.devdata}
OUT=${OUT:-gpu_check_out}
BUDGET_S=${BUDGET_S:-470}
TOKENS=${TOKENS_PER_BATCH:-32768}
BIG=${BIG_PRESET:-qwen2.5-32b}  # BIG_PRESET=check MID_PRESET=check ROWS=48: a CPU dry run of this script
MID=${MID_PRESET:-qwen2.5-7b}
ROWS=(${ROWS:+--rows "$ROWS"})
mkdir -p "$OUT"
log="$OUT/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$log"
python3 -c "import torch, transformers, peft, lightning, bitsandbytes as b
print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__,
      'lightning', lightning.__version__, 'bitsandbytes', b.__version__)" 2>&1 | tee -a "$log"
python3 -m suneung_lit.tiny artifacts/tiny-qwen2 >/dev/null  # the Qwen2.5 tokenizer the presets use
UNSLOTH=""
if [ -f .unsloth.zip ]; then  # unsloth for train_memory.py --unsloth, seen by its unsloth process alone
  export UNSLOTH_SITE=/tmp/unsloth-site
  python3 -m zipfile -e .unsloth.zip "$UNSLOTH_SITE" && UNSLOTH=1
fi

step() {  # step SECONDS SCRIPT ARGS...: one benchmark, logged, stopped at its limit (or the budget's end)
  local limit=$1; shift
  local left=$((BUDGET_S - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 30)); then
    echo "== skipped (budget spent): $*" | tee -a "$log"
    return
  fi
  echo "== $* (limit ${limit}s, ${SECONDS}s into the run)" | tee -a "$log"
  local start=$SECONDS
  timeout -k 15 "$limit" python3 "$@" --data-dir "$DATA" 2>&1 | grep --line-buffered -v -e "it/s\]" -e "examples/s]" -e "Tip:" -e "changed 0 item" \
    | tee -a "$log"
  echo "== exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$log"
  cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
}

# The steps, by name; STEPS picks some and their order (default: all, in this order). Each a step of its own:
prefix32b() {  # 32B-shaped NF4 over the test rows with a token budget per batch: prefix reuse (the target: <= 120 s)
  # and the plain path side by side, predictions compared; then where the GPU time of a plain pass goes.
  step 380 benchmarks/prefix_reuse.py --preset "$BIG" "${ROWS[@]}" --tokens-per-batch "$TOKENS" --profile-rows 64
}
predict7b() {  # 7B side by side with the batch-1 full-logits baseline.
  step 100 benchmarks/predict_speed.py --preset "$MID" --rows 48 --max-length 2048 --tokens-per-batch "$TOKENS"
}
train32b() {  # 32B training step, answer-position logits vs full logits (the transformers+peft step): memory, tokens/s.
  step 120 benchmarks/train_memory.py --preset "$BIG" --lengths 1024 2048 --batch-size 1 --steps 2 \
    --gradient-checkpointing
}
train7b() {  # the same for the 7B shape, without gradient checkpointing (it fits an 80 GB card at 2,048 tokens),
  # and unsloth's step on the same weights where .unsloth.zip travelled (benchmarks/unsloth_site.sh).
  local limit=100
  [ -n "$UNSLOTH" ] && limit=240  # saving the 15 GB bf16 folder unsloth loads, and loading it, take the rest
  step "$limit" benchmarks/train_memory.py --preset "$MID" --lengths 1024 2048 --batch-size 1 \
    --steps 3 ${UNSLOTH:+--unsloth}
}
fsdp7b() {  # sharded 4-bit training (fsdp_lora) on every GPU beside one device: memory per rank, losses compared.
  step 240 benchmarks/fsdp_memory.py --preset "$MID" --max-length 2048 --steps 6  # NF4 in host memory: slow
}
debias7b() {  # cyclic debiasing: none, every shifted copy in full, shared prefix, one packed pass (7B).
  step 150 benchmarks/debias_cost.py --preset "$MID" --rows 96 --max-length 2048 --batch-size 16
}
noise7b() {  # 7B prefix reuse vs plain beside the plain path batched vs one row at a time (bf16 rounding on a GPU).
  step 180 benchmarks/prefix_reuse.py --preset "$MID" "${ROWS[@]}" --tokens-per-batch "$TOKENS" --noise-floor
}
accuracy() {  # only where artifacts/gemma-3-270m already exists (it cannot travel to a device machine).
  [ -f artifacts/gemma-3-270m/config.json ] && step 300 benchmarks/accuracy.py --mode full
}
for name in ${STEPS:-prefix32b predict7b train32b train7b fsdp7b debias7b noise7b accuracy}; do
  "$name"
done
echo "== done after ${SECONDS}s" | tee -a "$log"
