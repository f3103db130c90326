#!/usr/bin/env bash
# Set up, then run the lint checks and the whole test suite (slow end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff format --check .
.venv/bin/ruff check .
# The docs site: --strict fails on a broken link, a missing page or anchor (not with --quiet, which hides them).
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site"
rm -rf "$site"
# Two workers: while one waits on an interpreter start-up, a tokenizer or a file, the other computes.
.venv/bin/python -m pytest -q -n 2 --dist worksteal --durations=15 "$@"
