#!/usr/bin/env python3
"""Print the path of the highest-numbered checkpoint.N in a directory that loads.

A checkpoint that fails to load (truncated, corrupt) is reported on stderr and skipped, so a
crash while writing the newest one falls back to the previous good one.
Exit status 1 when there is none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.model.checkpoint import CheckpointError, latest_checkpoint


def _skipped(path: Path, err: CheckpointError) -> None:
    print(f"latest_checkpoint.py: skipping {path}: {err}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    path = latest_checkpoint(args.directory, _skipped)
    if path is not None:
        print(path)
        return 0
    print(f"latest_checkpoint.py: no loadable checkpoint.N in {args.directory}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
