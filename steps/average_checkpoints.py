#!/usr/bin/env python3
"""Stage 4: average checkpoints into one model.

  average_checkpoints.py EXP_DIR START END --out EXP_DIR/model.avg
      averages checkpoint.START .. checkpoint.(END-1)   (seed semantics: 37 40 -> 37 38 39)
  average_checkpoints.py EXP_DIR --num N --best-by dev_cer|dev_loss --out EXP_DIR/model.avg
      averages the N checkpoints with the lowest dev metric (train_log.jsonl or the
      checkpoints' validation entries)

Fewer checkpoints than asked: those found are averaged and a warning says which.
"""

from __future__ import annotations

import argparse
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.export.average import AverageError, average_checkpoints
from e2e_asr.model.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("exp_dir")
    p.add_argument("start", nargs="?", type=int, help="first epoch to average")
    p.add_argument("end", nargs="?", type=int, help="one past the last epoch to average")
    p.add_argument("--num", type=int, help="average the N best checkpoints by --best-by")
    p.add_argument("--best-by", choices=("dev_cer", "dev_loss"), default="dev_loss")
    p.add_argument("--out", required=True, help="output checkpoint (e.g. EXP_DIR/model.avg)")
    a = p.parse_args(argv)
    if a.num is None and (a.start is None or a.end is None):
        p.error("give START END, or --num N")
    if a.num is not None and a.start is not None:
        p.error("give either START END or --num N, not both")
    try:
        paths = average_checkpoints(a.exp_dir, a.out, a.start, a.end, a.num, a.best_by)
    except (AverageError, CheckpointError) as e:
        return report_error("average_checkpoints", e)
    print(f"averaged {len(paths)} checkpoints ({', '.join(q.name for q in paths)}) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
