"""SIGKILL at an exact point of a stage, for tests/test_reliability_*.py (test-only).

Python imports ``sitecustomize`` at start-up from the first directory on ``sys.path`` that
holds one; the reliability tests put this directory on ``PYTHONPATH`` and set
``RELIABILITY_KILL``, so the *unchanged* command (``./run.sh --stage 3 …``,
``steps/make_feats.py …``) runs, and the process kills itself with a real SIGKILL (no
``finally``, no ``atexit``, no flush) when it reaches the named point. Without
``RELIABILITY_KILL`` this file does nothing.

``RELIABILITY_KILL`` is ``point=NAME,key=value,…``:

* ``point=update,step=K[,rank=R]``: right after optimizer update K (``StepRunner.update``).
* ``point=validation,call=N[,rank=R]``: in the N-th validation of the process, after its
  first dev batch has been scored.
* ``point=save,name=FILE``: while ``torch.save`` writes FILE (``checkpoint.N``/``snapshot``):
  half of the bytes are in the temp file (flushed to disk), then SIGKILL.
* ``point=feats,utt=N``: in a feature job, after its N-th utterance went into the ark.
* ``point=merge``: while stage 1 writes ``feats.scp`` (after the first line).
* ``point=json,call=N``: at the N-th closing of a stage-2 json file (before its rename).
* ``point=probe,call=N``: in stage 0, when the N-th audio file is about to be checked.

``action=raise`` raises RuntimeError there instead of the SIGKILL.
``group=1`` kills every process of the command (the runner, torchrun, every job, see
``die``); the default kills only this process.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

SPEC = os.environ.get("RELIABILITY_KILL", "")
OPTS: dict[str, str] = dict(p.split("=", 1) for p in SPEC.split(",") if "=" in p)
_calls: dict[str, int] = {}


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc), found before anything is killed."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def die(where: str) -> None:
    """SIGKILL this process; with ``group=1`` first every process of the command: the tree
    under ``RELIABILITY_ROOT`` (the test's child), including jobs that a runner started in
    their own sessions, as when a scheduler or the OOM killer ends the whole job."""
    now = f"t={time.time():.3f}"
    if OPTS.get("action") == "raise":
        raise RuntimeError(f"reliability_inject: failure injected at {where} ({now})")
    sys.stderr.write(f"reliability_inject: SIGKILL at {where} (pid {os.getpid()}, {now})\n")
    sys.stderr.flush()
    root = os.environ.get("RELIABILITY_ROOT")
    if OPTS.get("group") == "1" and root:
        for pid in _tree(int(root)):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    os.kill(os.getpid(), signal.SIGKILL)


def _count(name: str) -> int:
    _calls[name] = _calls.get(name, 0) + 1
    return _calls[name]


class _Proxy:
    """A module stand-in whose attributes come from ``module`` except the ``overrides``."""

    def __init__(self, module: ModuleType, **overrides: Callable[..., Any]) -> None:
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _patch_step(mod: ModuleType) -> None:
    if OPTS.get("point") != "update":
        return
    orig_update = mod.StepRunner.update
    rank = os.environ.get("RANK", "0")

    def update(self: Any) -> bool:
        ok = orig_update(self)
        if self.step == int(OPTS["step"]) and OPTS.get("rank", rank) == rank:
            die(f"update {self.step} (rank {rank})")
        return ok

    mod.StepRunner.update = update


def _patch_trainer(mod: ModuleType) -> None:
    point = OPTS.get("point")
    if point == "validation":
        orig_validate = mod.validate

        rank = os.environ.get("RANK", "0")

        def validate(model: Any, batches: Any, *args: Any, **kwargs: Any) -> Any:
            if _count("validation") != int(OPTS["call"]) or OPTS.get("rank", rank) != rank:
                return orig_validate(model, batches, *args, **kwargs)

            def killing() -> Any:
                for i, batch in enumerate(batches):
                    if i >= 1:
                        break
                    yield batch
                die(f"validation, after the first dev batch (rank {rank})")

            return orig_validate(model, killing(), *args, **kwargs)

        mod.validate = validate


def _patch_checkpoint(mod: ModuleType) -> None:
    if OPTS.get("point") != "save":
        return
    import io

    import torch

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        name = getattr(f, "name", "")
        if isinstance(name, int):  # os.fdopen: the temp file's path is behind its fd
            name = os.readlink(f"/proc/self/fd/{name}")
        name = os.path.basename(str(name))
        if not name.startswith(f".{OPTS['name']}."):
            torch.save(obj, f, *args, **kwargs)
            return
        buf = io.BytesIO()
        torch.save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        die(f"writing {name} ({len(data) // 2} of {len(data)} bytes)")

    mod.torch = _Proxy(torch, save=save)


def _patch_kaldiio(mod: ModuleType) -> None:
    # feature jobs run as ``python -m e2e_asr.data.feature_jobs`` (as __main__, which the
    # finder below does not see); they call ``kaldiio.save_ark`` through the module
    if OPTS.get("point") != "feats":
        return
    orig = mod.save_ark

    def save_ark(*args: Any, **kwargs: Any) -> Any:
        out = orig(*args, **kwargs)
        if _count("feats") == int(OPTS["utt"]):
            die(f"feature job, after utterance {_calls['feats']}")
        return out

    mod.save_ark = save_ark


def _patch_feature_jobs(mod: ModuleType) -> None:
    if OPTS.get("point") != "merge":
        return
    orig = mod.atomic_write_lines

    def atomic_write_lines(path: Any, lines: Any) -> int:
        if os.path.basename(str(path)) != "feats.scp":
            return orig(path, lines)

        def killing() -> Any:
            for i, line in enumerate(lines):
                if i == 1:
                    die("writing feats.scp")
                yield line

        return orig(path, killing())

    mod.atomic_write_lines = atomic_write_lines


def _patch_espnet_json(mod: ModuleType) -> None:
    if OPTS.get("point") != "json":
        return
    orig_close = mod.JsonWriter.close

    def close(self: Any) -> None:
        if _count("json") == int(OPTS["call"]):
            self._fh.flush()
            die(f"closing json file {_calls['json']}")
        orig_close(self)

    mod.JsonWriter.close = close


def _patch_validate(mod: ModuleType) -> None:
    if OPTS.get("point") != "probe":
        return
    orig = mod.probe_audio

    def probe_audio(*args: Any, **kwargs: Any) -> Any:
        if _count("probe") == int(OPTS["call"]):
            die(f"stage 0, probing audio file {_calls['probe']}")
        return orig(*args, **kwargs)

    mod.probe_audio = probe_audio


PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "e2e_asr.data.validate": _patch_validate,
    "e2e_asr.train.trainer": _patch_trainer,
    "e2e_asr.train.step": _patch_step,
    "e2e_asr.model.checkpoint": _patch_checkpoint,
    "e2e_asr.data.feature_jobs": _patch_feature_jobs,
    "kaldiio": _patch_kaldiio,
    "e2e_asr.data.espnet_json": _patch_espnet_json,
}


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a module right after it has been executed (its first import)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        orig_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            orig_exec(module)
            PATCHES[name](module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if OPTS.get("point"):
    sys.meta_path.insert(0, _Finder())
