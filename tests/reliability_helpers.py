"""Helpers for the fault-injection tests (tests/test_reliability_*.py).

* ``start``/``finish``: run a recipe command in its own process group (so a SIGKILL of the
  whole group takes down runners and jobs, never pytest), output to a file.
* ``inject_env``: the environment that makes ``tests/reliability_inject/sitecustomize.py``
  SIGKILL the command at a named point (see that file).
* ``small_disk``: a directory on a tiny tmpfs (disk full), or, where mounting is not
  permitted (or ``RELIABILITY_NO_MOUNT=1``), a per-process file-size limit (RLIMIT_FSIZE) as
  a filesystem-level simulation.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
INJECT_DIR = Path(__file__).resolve().parent / "reliability_inject"


def inject_env(kill: str | None = None, **extra: str) -> dict[str, str]:
    """Recipe environment (utils/ steps/ venv on PATH, one thread); with ``kill``, the
    injector is loaded and ``RELIABILITY_KILL`` set."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [str(REPO / "utils"), str(REPO / "steps"), venv_bin, env.get("PATH", "")]
    )
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("RELIABILITY_KILL", None)
    if kill:
        env["RELIABILITY_KILL"] = kill
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(INJECT_DIR), env.get("PYTHONPATH", "")) if p
        )
    env.update(extra)
    return env


@dataclass
class Proc:
    popen: subprocess.Popen
    out: Path
    t0: float

    @property
    def text(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")


def start(
    cmd: list[str],
    out: Path,
    kill: str | None = None,
    cwd: Path | None = None,
    preexec: Callable[[], None] | None = None,
    **extra_env: str,
) -> Proc:
    out.parent.mkdir(parents=True, exist_ok=True)
    fh = open(out, "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    if kill:  # the injector kills the process tree under this pid (exec keeps it)
        cmd = ["sh", "-c", 'RELIABILITY_ROOT=$$ exec "$@"', "sh", *cmd]
    popen = subprocess.Popen(
        cmd,
        cwd=cwd or REPO,
        env=inject_env(kill, **extra_env),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,
    )
    fh.close()
    return Proc(popen, out, time.time())


def finish(proc: Proc, timeout: float = 240) -> int:
    """Wait for the process (killing its group on timeout); returns the exit code."""
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()
        raise AssertionError(
            f"timed out after {timeout}s: {proc.popen.args}\n{proc.text[-3000:]}"
        ) from None
    finally:
        # nothing of the group may outlive the test (a killed runner's orphaned jobs)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)


def run(
    cmd: list[str], out: Path, kill: str | None = None, timeout: float = 240, **kw: Any
) -> tuple[int, str]:
    proc = start(cmd, out, kill, **kw)
    rc = finish(proc, timeout)
    return rc, proc.text


def py(script: str) -> list[str]:
    """``python steps/<script>`` with the venv's interpreter."""
    return [sys.executable, str(REPO / "steps" / script)]


def assert_same_training_state(ref: dict[str, Any], got: dict[str, Any]) -> None:
    """Bit-identical weights, update count, schedule and Adam moments."""
    assert ref["model"].keys() == got["model"].keys()
    for k, v in ref["model"].items():
        assert torch.equal(v, got["model"][k]), f"weight {k} differs"
    assert ref["step"] == got["step"] and ref["epoch"] == got["epoch"]
    assert ref["scheduler"] == got["scheduler"]
    sa, sb = ref["optimizer"]["state"], got["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][name], sb[i][name]), f"optimizer state {i}.{name} differs"


@dataclass
class SmallDisk:
    path: Path
    how: str  # "tmpfs" or "rlimit"
    limit: int  # bytes

    def preexec(self) -> Callable[[], None] | None:
        """For subprocesses: nothing on a tmpfs; else the file-size limit."""
        if self.how == "tmpfs":
            return None
        limit = self.limit

        def apply() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return apply


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[SmallDisk]:
    """``path`` on a tmpfs of ``size_kb`` KiB; a RLIMIT_FSIZE simulation if mount fails."""
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)]
    if os.environ.get("RELIABILITY_NO_MOUNT") == "1":  # to test the fallback where mount works
        cmd = ["false"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(f"small_disk: mount not permitted ({res.stderr.strip()}); RLIMIT_FSIZE instead")
        yield SmallDisk(path, "rlimit", size_kb * 1024)
        return
    try:
        yield SmallDisk(path, "tmpfs", size_kb * 1024)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
