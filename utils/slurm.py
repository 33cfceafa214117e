#!/usr/bin/env python3
"""Run a command as N jobs on a Slurm cluster, one log per job (Kaldi's slurm.pl, in Python).

    slurm.py [--config conf/slurm.conf] [--max-jobs-run K] [--NAME VALUE ...] \\
             JOB=1:N LOGFILE CMD [ARG ...]

Same calling convention as utils/run.py: the string JOB in LOGFILE and in every ARG is replaced
by the job index, each job's output goes to its own log (framed by the command line, start
time, exit code and elapsed time), and the exit status is 0 only when every job succeeded;
otherwise every failed job is named with its log and the exit status is 1.

The jobs are one ``sbatch --array=1-N%K --wait`` submission (K = --max-jobs-run, 0: no limit).
Each array task runs a generated script (next to the logs, in ``q/``) that writes its log and
an exit-status file; the status files, not sbatch's exit code, decide which jobs failed, and a
job that left none (cancelled, timed out, node failure) is named with Slurm's own state for it.
Ctrl-C (or SIGTERM) cancels the submitted jobs with ``scancel``.

Options other than --config and --max-jobs-run (``--mem 4G``, ``--gpu 1``, ``--time 1:00:00``,
``--partition gpu``, ``--num-threads 4``) are translated into sbatch options by the config
file, in Kaldi's format::

    command sbatch --export=ALL      # the submit command and options always given
    default mem=                     # value used when the option is not given
    option mem=* --mem $0            # NAME=* matches any value; $0 is the value
    option gpu=0                     # an exact value wins over NAME=*; nothing added here
    option gpu=* --gres=gpu:$0

An option the config does not mention is an error; an empty value adds nothing.
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
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import command_for, job_spec  # noqa: E402  (utils/run.py: one argument grammar)

from e2e_asr.cli import report_error  # noqa: E402  (importable: run.py set up the .venv)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "slurm.conf"
# A status file may show up late on a network file system after its job ended.
STATUS_GRACE_SECONDS = float(os.environ.get("SLURM_PY_STATUS_GRACE", "15"))


class SlurmConfigError(ValueError):
    pass


@dataclass
class SlurmConfig:
    """A Kaldi-style slurm.conf: the submit command, option rules and defaults."""

    command: list[str] = field(default_factory=lambda: ["sbatch"])
    rules: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> value|* -> opts
    defaults: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike) -> SlurmConfig:
        cfg = cls()
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise SlurmConfigError(f"cannot read {path}: {e.strerror or e}") from None
        for n, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            kind, _, rest = line.partition(" ")
            rest = rest.strip()
            if kind == "command":
                cfg.command = shlex.split(rest)
                continue
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*(.*)$", rest)
            if kind not in ("option", "default") or not m:
                raise SlurmConfigError(
                    f"{path}:{n}: expected 'command ...', 'option NAME=VALUE opts' or "
                    f"'default NAME=VALUE', got: {raw.strip()}"
                )
            name, value, opts = m.groups()
            if kind == "default":
                cfg.defaults[name] = value
            else:
                cfg.rules.setdefault(name, {})[value] = opts
        if not cfg.command:
            raise SlurmConfigError(f"{path}: empty 'command' line")
        return cfg

    def sbatch_options(self, given: dict[str, str]) -> list[str]:
        """Options for the given ``--NAME VALUE`` pairs and the defaults of the others."""
        unknown = sorted(set(given) - set(self.rules))
        if unknown:
            known = ", ".join("--" + k.replace("_", "-") for k in sorted(self.rules))
            raise SlurmConfigError(
                f"option --{unknown[0].replace('_', '-')} is not in the slurm config "
                f"(known: {known})"
            )
        out: list[str] = []
        for name, rules in self.rules.items():
            value = given.get(name, self.defaults.get(name, ""))
            if value in rules:
                opts = rules[value]
            elif value == "":
                continue
            elif "*" in rules:
                opts = rules["*"].replace("$0", value)
            else:
                raise SlurmConfigError(
                    f"--{name.replace('_', '-')} {value}: the slurm config has no rule for "
                    f"this value (has: {', '.join(sorted(rules))})"
                )
            out += shlex.split(opts)
        return out


def _parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="slurm.py",
        usage="slurm.py [--config FILE] [--max-jobs-run K] [--NAME VALUE ...] "
        "[JOB=1:N] LOGFILE CMD [ARG ...]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG),
        help=f"Kaldi-style slurm config (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--max-jobs-run",
        type=int,
        default=0,
        help="at most this many array tasks at once (default 0: no limit)",
    )
    # --config/--max-jobs-run and --NAME VALUE pairs may come in any order before JOB=/LOGFILE
    own: list[str] = []
    given: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        key, eq, val = argv[i][2:].partition("=")
        if key in ("help", "h"):
            parser.parse_args(["--help"])
        if not eq:
            if i + 1 >= len(argv):
                parser.error(f"option {argv[i]} needs a value")
            val = argv[i + 1]
            i += 1
        i += 1
        if key in ("config", "max-jobs-run"):
            own += [f"--{key}", val]
        else:
            given[key.replace("-", "_")] = val
    args = parser.parse_args(own)
    if args.max_jobs_run < 0:
        parser.error("--max-jobs-run must be 0 (no limit) or more")
    args.job = job_spec(parser, argv[i:])
    return args, given


def _script(cwd: str, jobs: dict[int, tuple[Path, list[str]]], status: str) -> str:
    """The batch script every array task runs: its own command, log framing, status file."""
    lines = [
        "#!/usr/bin/env bash",
        "# written by utils/slurm.py; run by every task of one sbatch job array",
        f"cd {shlex.quote(cwd)} || exit 1",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for index, (log, words) in jobs.items():
        lines.append(
            f"  {index}) log={shlex.quote(str(log))}; "
            f"header={shlex.quote('# ' + shlex.join(words))}; "
            f"cmd=({' '.join(shlex.quote(w) for w in words)}) ;;"
        )
    lines += [
        '  *) echo "slurm.py script: no job $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;',
        "esac",
        'status="' + status.replace("INDEX", "$SLURM_ARRAY_TASK_ID") + '"',
        "start=$(date +%s)",
        '{ echo "$header"; echo "# Started at $(date) on $(hostname)'
        ' (slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})"; echo "#"; } > "$log"',
        '"${cmd[@]}" >> "$log" 2>&1 < /dev/null',
        "code=$?",
        "elapsed=$(( $(date +%s) - start ))",
        '{ echo "#"; echo "# Accounting: time=$elapsed threads=${SLURM_CPUS_PER_TASK:-1}";'
        ' echo "# Ended (code $code) at $(date), elapsed time $elapsed seconds"; } >> "$log"',
        'echo "$code" > "$status.tmp" && mv "$status.tmp" "$status"',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def _slurm_state(job_id: str, index: int) -> str:
    """Slurm's own word on an array task that left no status file (if it still knows it)."""
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", f"{job_id}_{index}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    state = re.search(r"\bJobState=(\S+)", out)
    reason = re.search(r"\bReason=(\S+)", out)
    if not state:
        return "no longer known to slurm"
    return state.group(1) + (f", {reason.group(1)}" if reason and reason.group(1) != "None" else "")


def main(argv: list[str] | None = None) -> int:
    args, given = _parse(sys.argv[1:] if argv is None else argv)
    name, first, last, log_pattern, cmd = args.job
    try:
        cfg = SlurmConfig.read(args.config)
        options = cfg.sbatch_options(given)
    except SlurmConfigError as e:
        return report_error("slurm.py", e)
    jobs: dict[int, tuple[Path, list[str]]] = {}
    for index in range(first, last + 1):
        log = Path(log_pattern.replace(name, str(index))).absolute()
        log.parent.mkdir(parents=True, exist_ok=True)
        jobs[index] = (log, command_for(name, index, cmd))
    # the script and status files live next to the logs (a shared file system, as in Kaldi)
    first_log = jobs[first][0]
    qdir = first_log.parent / "q"
    qdir.mkdir(exist_ok=True)
    base = re.sub(r"\.log$", "", Path(log_pattern).name.replace(name, ""))
    base = base.replace("..", ".").strip(".") or "job"
    tag = f"{base}.{os.getpid()}"
    script = qdir / f"{tag}.sh"
    status = str(qdir / f"{tag}.INDEX.status")
    for index in jobs:
        Path(status.replace("INDEX", str(index))).unlink(missing_ok=True)
    script.write_text(_script(os.getcwd(), jobs, status), encoding="utf-8")
    script.chmod(0o755)
    array = f"{first}-{last}" + (f"%{args.max_jobs_run}" if args.max_jobs_run else "")
    out_pattern = qdir / f"{tag}.%a.out"  # scheduler messages (time limit, node failure ...)
    submit = [
        *cfg.command,
        *options,
        "--parsable",
        "--wait",
        f"--array={array}",
        f"--job-name={base}",
        f"--output={out_pattern}",
        str(script),
    ]
    try:
        proc = subprocess.Popen(
            submit,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as e:
        print(
            f"slurm.py: cannot run {submit[0]}: {e.strerror or e} (is Slurm installed?)",
            file=sys.stderr,
        )
        return 1
    job_id = ""

    def cancel(signum: int, _frame: object) -> None:
        if job_id:
            subprocess.run(["scancel", job_id], check=False)
            print(f"slurm.py: interrupted; cancelled slurm job {job_id}", file=sys.stderr)
        proc.terminate()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, cancel)
    signal.signal(signal.SIGTERM, cancel)
    assert proc.stdout is not None and proc.stderr is not None
    job_id = proc.stdout.readline().strip().split(";")[0]
    _, err = proc.communicate()
    if not job_id:
        print(
            f"slurm.py: submission failed ({shlex.join(submit)}):\n{err.strip()}", file=sys.stderr
        )
        return 1

    def exit_code(index: int) -> int | None:
        try:
            return int(Path(status.replace("INDEX", str(index))).read_text().strip())
        except (OSError, ValueError):
            return None

    codes = {i: exit_code(i) for i in jobs}
    deadline = time.time() + STATUS_GRACE_SECONDS
    while any(c is None for c in codes.values()) and time.time() < deadline:
        time.sleep(0.5)
        codes = {i: c if c is not None else exit_code(i) for i, c in codes.items()}
    failed = 0
    for index, code in codes.items():
        log = jobs[index][0]
        if code == 0:
            continue
        failed += 1
        if code is None:
            out = str(out_pattern).replace("%a", str(index))
            print(
                f"slurm.py: job {name}={index} (slurm job {job_id}_{index}) ended without an "
                f"exit status ({_slurm_state(job_id, index)}); see {log} and {out}",
                file=sys.stderr,
            )
        else:
            print(
                f"slurm.py: job {name}={index} failed with exit code {code}; see {log}",
                file=sys.stderr,
            )
    if failed:
        if err.strip():
            print(f"slurm.py: sbatch: {err.strip()}", file=sys.stderr)
        print(
            f"slurm.py: {failed} of {len(jobs)} jobs failed (slurm job {job_id})", file=sys.stderr
        )
        return 1
    for index in jobs:
        Path(status.replace("INDEX", str(index))).unlink(missing_ok=True)
    script.unlink(missing_ok=True)
    for index in jobs:  # empty scheduler outputs of finished jobs are noise
        out = Path(str(out_pattern).replace("%a", str(index)))
        if out.is_file() and out.stat().st_size == 0:
            out.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
