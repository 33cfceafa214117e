#!/usr/bin/env python3
"""Run a command as N parallel jobs on this machine, one log per job (Kaldi's run.pl, in Python).

    run.py [--max-jobs-run K] JOB=1:N LOGFILE CMD [ARG ...]
    run.py LOGFILE CMD [ARG ...]

The string JOB in LOGFILE and in every ARG is replaced by the job index. Each job's stdout and
stderr go to its log, framed by the command line, start time, exit code and elapsed time. Exits 0
when all jobs succeed; otherwise names every failed job with its log path and exits 1.
A single CMD string containing spaces runs through bash, so pipes work as in Kaldi.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

_JOB_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$")


def job_spec(
    parser: argparse.ArgumentParser, rest: list[str]
) -> tuple[str, int, int, str, list[str]]:
    """(JOB name, first, last, LOGFILE, CMD) from ``[JOB=1:N] LOGFILE CMD...``; shared with
    utils/slurm.py so both runners read their arguments the same way."""
    name, first, last = "JOB", 1, 1
    if rest and (m := _JOB_RANGE.match(rest[0])):
        name, first, last = m.group(1), int(m.group(2)), int(m.group(3))
        rest = rest[1:]
        if last < first:
            parser.error(f"empty job range {name}={first}:{last}")
    if len(rest) < 2:
        parser.error("need a LOGFILE and a command")
    return name, first, last, rest[0], rest[1:]


def _parse(argv: list[str]) -> tuple[int, str, int, int, str, list[str]]:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--max-jobs-run",
        type=int,
        default=os.cpu_count() or 1,
        help="at most this many jobs at once (default: number of cores)",
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.max_jobs_run < 1:
        parser.error("--max-jobs-run must be at least 1")
    return (args.max_jobs_run, *job_spec(parser, args.rest))


def command_for(job_name: str, index: int, cmd: list[str]) -> list[str]:
    words = [w.replace(job_name, str(index)) for w in cmd]
    if len(words) == 1 and any(c.isspace() for c in words[0]):
        return ["bash", "-c", words[0]]
    return words


def main(argv: list[str] | None = None) -> int:
    max_jobs, name, first, last, log_pattern, cmd = _parse(sys.argv[1:] if argv is None else argv)
    pending = list(range(first, last + 1))
    running: dict[int, tuple[subprocess.Popen, float, object, Path]] = {}
    failed: list[tuple[int, int, Path]] = []

    def stop_all(signum: int, _frame: object) -> None:
        for proc, *_ in running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)

    while pending or running:
        while pending and len(running) < max_jobs:
            index = pending.pop(0)
            log_path = Path(log_pattern.replace(name, str(index)))
            log_path.parent.mkdir(parents=True, exist_ok=True)
            command = command_for(name, index, cmd)
            log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed when the job ends)
            log.write(f"# {shlex.join(command)}\n# Started at {time.ctime()}\n#\n")
            log.flush()
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            running[index] = (proc, time.time(), log, log_path)
        time.sleep(0.05)
        for index in list(running):
            proc, started, log, log_path = running[index]
            code = proc.poll()
            if code is None:
                continue
            elapsed = time.time() - started
            log.write(
                f"#\n# Accounting: time={elapsed:.0f} threads=1\n"
                f"# Ended (code {code}) at {time.ctime()}, "
                f"elapsed time {elapsed:.1f} seconds\n"
            )
            log.close()
            del running[index]
            if code != 0:
                failed.append((index, code, log_path))

    if failed:
        total = last - first + 1
        for index, code, log_path in sorted(failed):
            print(
                f"run.py: job {name}={index} failed with exit code {code}; see {log_path}",
                file=sys.stderr,
            )
        print(f"run.py: {len(failed)} of {total} jobs failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
