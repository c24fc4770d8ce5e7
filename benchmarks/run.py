"""Run every benchmark section in turn; each prints JSON lines on stdout.

    make bench                       # all sections
    python -m benchmarks.run forward # one section
"""
from __future__ import annotations

import importlib
import sys

SECTIONS = ("forward", "train", "quantize", "zoo")


def main(argv=None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or SECTIONS
    for name in names:
        if name not in SECTIONS:
            sys.exit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        importlib.import_module(f"benchmarks.{name}").main([])


if __name__ == "__main__":
    main()
