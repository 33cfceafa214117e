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

from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint


def numbered_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob("checkpoint.*"):
        suffix = path.name.split(".", 1)[1]
        if suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    for _, path in numbered_checkpoints(args.directory):
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            print(f"latest_checkpoint.py: skipping {path}: {err}", file=sys.stderr)
            continue
        print(path)
        return 0
    print(f"latest_checkpoint.py: no loadable checkpoint.N in {args.directory}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
