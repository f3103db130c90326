#!/usr/bin/env bash
# Packs unsloth and what it needs beyond the device image (Python 3.12, torch 2.11, transformers 5.17, triton,
# torchvision) into .unsloth.zip, for `train_memory.py --unsloth` on a device machine, which cannot reach PyPI.
# Unpacked it is over the device tool's 64 MiB a call, so it travels zipped and is unpacked there; unsloth's
# Studio (its web interface, 119 MB unpacked, unused by training) is left out. xformers and flash-attn are not
# carried: unsloth then uses PyTorch's attention, which the table names.
#   here:   bash benchmarks/unsloth_site.sh            (after ../shared/device/prepare.sh, which fills .devsite)
#   there:  python3 -m zipfile -e .unsloth.zip /tmp/unsloth-site &&
#           export PYTHONPATH=/tmp/unsloth-site:$PWD/.devsite:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
# Carry [".devsite", ".devdata", ".unsloth.zip"]. The versions were checked on a CPU (unsloth's CPU backend) with
# transformers 5.17.0 on 2026-12-07: `train_memory.py --unsloth` ran and all three first-step losses agreed.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
grep -qx '/.unsloth.zip' .git/info/exclude 2>/dev/null || echo '/.unsloth.zip' >> .git/info/exclude
wheels=$(mktemp -d); site=$(mktemp -d)
trap 'rm -rf "$wheels" "$site"' EXIT
# datasets < 5 for unsloth (the .devsite's 5.2.0 stays behind it on the path); tyro and its needs for trl; the
# peft that the CPU check ran with (the image's version is not recorded).
specs=(unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 torchao==0.18.0 cut_cross_entropy==25.1.1
       datasets==4.3.0 tyro==1.0.17 docstring_parser==0.18.0 shtab==1.13.0 typeguard==4.6.1 msgspec==0.23.0
       hf_transfer==0.1.9 peft==0.21.2)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
  -d "$wheels" "${specs[@]}" 2>&1 | grep -v "^WARNING: Location" || true
for w in "$wheels"/*.whl; do (cd "$site" && python3 -m zipfile -e "$w" .); done
rm -rf "$site/studio" "$site/unsloth_cli"
rm -f .unsloth.zip
python3 - "$site" "$root/.unsloth.zip" <<'PY'  # deflated (zipfile's command line would store it uncompressed)
import sys, zipfile
from pathlib import Path
site = Path(sys.argv[1])
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
    for path in sorted(site.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            archive.write(path, path.relative_to(site))
PY
ls -la .unsloth.zip
du -sh .devsite 2>/dev/null || echo "no .devsite yet: run bash ../shared/device/prepare.sh first"
