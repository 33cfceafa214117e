#!/usr/bin/env python3
"""Check a run's base model and plan its epochs and averaging before any stage runs.

  plan_run.py --base-model CKPT --epochs E|+N [--avg-start S --avg-end E | --avg-num N]
              [--avg-last L] [--exp-dir DIR] [--prog run.sh]
  plan_run.py --base-model CKPT --no-plan         (only the load check; prints base_epoch=N)

Loads the base model once (a wrong path, a directory or a file that is not a checkpoint is
named as such), resolves ``--epochs +N`` (N epochs after the base), and decides what stage 4
averages (export/average.py's plan_average), so an impossible range is refused before
training. Prints shell assignments for run.sh (``base_epoch=29 epochs=40 avg_start=38
avg_end=41`` or ``... avg_num=3``); on a problem, one line on stderr and exit status 1.
Without --base-model the base epoch is the one before the oldest checkpoint.N in --exp-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with the project's .venv when needed)


def _int_or_none(s: str) -> int | None:
    return int(s) if s.strip() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-model", default="")
    p.add_argument("--epochs", default="")
    p.add_argument("--no-plan", action="store_true", help="only load the base model")
    p.add_argument("--avg-start", default="")
    p.add_argument("--avg-end", default="")
    p.add_argument("--avg-num", default="0")
    p.add_argument("--avg-last", default="3")
    p.add_argument("--exp-dir", default="")
    p.add_argument("--prog", default="plan_run.py")
    a = p.parse_args(argv)

    from e2e_asr.cli import report_error
    from e2e_asr.export.average import AverageError, list_checkpoints, plan_average
    from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint

    def fail(msg: str | Exception, context: str = "") -> int:
        return report_error(a.prog, msg, label=None, context=context)

    if a.base_model:
        try:
            payload = load_checkpoint(a.base_model)
        except CheckpointError as e:
            return fail(e, "--base-model: ")
        base_epoch = int(payload.get("epoch") or 0)
    else:
        have = list_checkpoints(a.exp_dir) if a.exp_dir and Path(a.exp_dir).is_dir() else {}
        if not have:
            return fail("give --base-model (the checkpoint.N to fine-tune)")
        base_epoch = min(have) - 1
    if a.no_plan:
        print(f"base_epoch={base_epoch}")
        return 0
    if not a.epochs.strip():
        return fail("give --epochs (the last epoch to train, or +N)")
    try:
        e = a.epochs.strip()
        epochs = base_epoch + int(e[1:]) if e.startswith("+") else int(e)
        plan = plan_average(
            base_epoch,
            epochs,
            _int_or_none(a.avg_start),
            _int_or_none(a.avg_end),
            int(a.avg_num or 0),
            int(a.avg_last or 3),
        )
    except ValueError as err:  # AverageError is a ValueError; so is a non-number
        if not isinstance(err, AverageError):
            return fail(f"--epochs/--avg-*: expected whole numbers ({err})")
        return fail(err)
    print(f"base_epoch={base_epoch} epochs={epochs}", end=" ")
    if isinstance(plan, tuple):
        print(f"avg_start={plan[0]} avg_end={plan[1]}")
    else:
        print(f"avg_num={plan}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
