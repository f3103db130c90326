"""``python -m suneung_lit fit|validate|test|predict --config configs/NAME.yaml``"""

from suneung_lit.cli import main

if __name__ == "__main__":
    main()
