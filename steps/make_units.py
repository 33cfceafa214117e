#!/usr/bin/env python3
"""Units for a model trained from scratch: <blank> 0, <unk> 1, every character of the text
sorted, <sos/eos> last."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.data.datadir import DataDirError, iter_kv
from e2e_asr.data.units import build_units, write_units


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, help="data dir whose 'text' gives the characters")
    p.add_argument("--out", required=True, help="units.txt to write")
    args = p.parse_args(argv)
    text = Path(args.data_dir) / "text"
    if not text.is_file():
        print(f"make_units.py: error: {text} not found", file=sys.stderr)
        return 1
    try:
        units = build_units(t for _, t in iter_kv(text, allow_empty_value=True))
    except DataDirError as exc:
        return report_error("make_units.py", exc)
    write_units(args.out, units)
    print(f"{len(units)} units -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
