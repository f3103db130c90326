"""``python -m suneung_lit.reasoning star DATA GENERATED --output FILE``: self-generated rationales (STaR)."""

from __future__ import annotations

import sys

from suneung_lit.reasoning.star import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "star":
        print("usage: python -m suneung_lit.reasoning star DATA GENERATED --output FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[2:]))
