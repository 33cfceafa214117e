#!/usr/bin/env python3
"""Stage 3's launcher: torchrun (torch.distributed.run) with the same arguments, whose own
tracebacks become one line each.

  launch_train.py [torchrun options] steps/train.py [train.py options]

torchrun ends a Ctrl-C with a SignalException traceback, and a failed rank with a
ChildFailedError report of some 20 lines, after the ranks have already said what went wrong
(one line each, also in EXP_DIR/train.log). Here a Ctrl-C ends in "interrupted; re-run the
same command to resume" (exit 128 + signal) and a failed rank in one line naming it and its
exit code (exit 1). With E2E_ASR_DEBUG=1, torchrun's own warnings, tracebacks and reports are
shown as they are.
"""

from __future__ import annotations

import logging
import os
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import debug_enabled, report_error

PROG = "train"


def _exp_dir(argv: list[str]) -> str:
    for i, arg in enumerate(argv[:-1]):
        if arg == "--exp-dir":
            return argv[i + 1]
    return "EXP_DIR"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = debug_enabled()
    saved = os.environ.get("LOGLEVEL")
    if not debug:  # torchrun logs the shutdown and the failed rank; the ranks and we say it
        os.environ["LOGLEVEL"] = "CRITICAL"
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if not debug:  # (the modules that log through plain logging.getLogger inherit this level)
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    if saved is None:  # the ranks log as they would under torchrun itself
        os.environ.pop("LOGLEVEL", None)
    else:
        os.environ["LOGLEVEL"] = saved
    try:
        torchrun(argv)
    except SignalException as exc:
        if debug:
            raise
        print(
            f"{PROG}: interrupted (signal {int(exc.sigval)}); re-run the same command to resume "
            f"from the newest snapshot/checkpoint in {_exp_dir(argv)}",
            file=sys.stderr,
        )
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        if debug:
            raise
        rank, failure = exc.get_first_failure()
        return report_error(
            PROG,
            f"rank {rank} failed (exit code {failure.exitcode}); its error is above and in "
            f"{_exp_dir(argv)}/train.log (E2E_ASR_DEBUG=1 shows torchrun's report)",
            label=None,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
