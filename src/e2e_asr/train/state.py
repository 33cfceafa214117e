"""Training state in checkpoints: RNG states, resume discovery, old-checkpoint pruning.

Files in ``exp_dir`` (written by rank 0 only, atomically, via
``e2e_asr.model.checkpoint.save_checkpoint``):

* ``checkpoint.N`` - end of epoch N; full payload, resumable, and the input of averaging.
* ``snapshot`` - the newest mid-epoch state (every ``snapshot_interval`` updates); overwritten.

``train_state`` in the payload says where the run stands: ``epoch`` (the epoch in progress, or
the one just finished), ``batch`` (batches of that epoch this rank has trained), ``done``
(epoch finished), ``order`` (the epoch's shuffled batch order, checked on resume), the epoch's
loss sums so far, and ``fingerprint`` (what the run trains on; resuming a different run's
state is refused instead of silently continuing it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint\.(\d+)$")
SNAPSHOT_NAME = "snapshot"


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as plain data (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python_version": version,
        "python": list(internal),
        "python_gauss": gauss,
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fingerprint(parts: dict[str, Any]) -> str:
    """A short hash of what a run trains on (config, data dir, base model, world size)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def list_checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``checkpoint.N``, newest epoch first."""
    found = []
    for p in exp_dir.glob("checkpoint.*"):
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _try_load(path: Path) -> dict[str, Any] | None:
    try:
        payload = load_checkpoint(path)
    except CheckpointError as exc:
        log.warning("resume: skipping %s: %s", path, exc)
        return None
    if "train_state" not in payload or "optimizer" not in payload:
        log.warning("resume: skipping %s: it holds no training state", path)
        return None
    return payload


def find_resume(exp_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest valid resumable state in ``exp_dir`` (snapshot or checkpoint.N), by step.

    A corrupt or truncated file is skipped with a message that names it.
    """
    best: tuple[Path, dict[str, Any]] | None = None
    for _, path in list_checkpoints(exp_dir):
        payload = _try_load(path)
        if payload is not None:
            best = (path, payload)
            break
    snap = exp_dir / SNAPSHOT_NAME
    if snap.exists():
        payload = _try_load(snap)
        if payload is not None and (best is None or int(payload["step"]) > int(best[1]["step"])):
            best = (snap, payload)
    return best


def prune_checkpoints(exp_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoint.N (0 keeps everything)."""
    if keep_last <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(exp_dir)[keep_last:]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
