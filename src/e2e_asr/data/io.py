"""Atomic file output: every file is written to a temporary name in its directory, then renamed.

A reader (or a re-run after a crash) therefore sees either the old file or the complete new
one, never a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# mkstemp creates owner-only (0600) files; a finished file gets the mode open() would give it
FILE_MODE = 0o666 & ~_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a rename inside directory ``path`` (best effort where directories can't sync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp file name beside ``path`` for writers that want a file name (ONNX, soundfile,
    matplotlib, torch.save); on clean exit the file is fsynced, given normal permissions and
    renamed over ``path``; on any error it is removed. ``suffix`` keeps an extension that a
    writer needs to pick its format (``.wav``, ``.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit fsync and rename it over ``path``."""
    binary = "b" in mode
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if binary else encoding) as fh:
        yield fh


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write one line per item (newline added) atomically; returns the number of lines."""
    n = 0
    with atomic_open(path, "w") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
            n += 1
    return n


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def job_error_lines(log_dir: Path, log_name: str, nj: int, what: str) -> str:
    """The error line of each failed job's log (``{log_name}.{j}.log``, lines starting with
    ``{what} job {j}: error:``), joined, so the reason shows without opening the logs."""
    found = []
    for j in range(1, nj + 1):
        try:
            lines = (log_dir / f"{log_name}.{j}.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        found += [x for x in lines if x.startswith(f"{what} job {j}: error:")][-1:]
    return "".join(f"{x}; " for x in found)
