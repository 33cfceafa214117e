"""Training state in checkpoints: RNG states, the run's fingerprint, where to resume.

Files in ``exp_dir`` (written by rank 0 only, atomically, via
``e2e_asr.model.checkpoint.save_checkpoint``):

* ``checkpoint.N`` - end of epoch N; full payload, resumable, and the input of averaging.
* ``snapshot`` - the newest mid-epoch state (every ``snapshot_interval`` updates); overwritten.

``train_state`` in the payload says where the run stands: ``epoch`` (the epoch in progress, or
the one just finished), ``batch`` (batches of that epoch each rank has trained), ``done``
(epoch finished), ``order`` (the epoch's plan: per shard in the epoch's order its number,
batch count and a checksum of its batches, checked on resume), each rank's
loss sums of the epoch so far (``loss_sums``: one ``[loss x utts, utts]`` pair per rank), and
``fingerprint`` (what the run trains on; resuming a different run's state is refused instead of
silently continuing it).

The fingerprint is path-independent (nodes may mount shared storage at different paths): the
config without operational keys (``OPERATIONAL_KEYS``: logging, snapshots, workers, timeouts,
which may change between a run and its resume), the json shards by name and size, the base
model by name, size, epoch and update.

Under DDP rank 0 alone decides the resume point (``agree_on_resume``) and broadcasts it; every
rank then loads that file from its own ``exp_dir`` and all ranks compare what they see (the
listing of ``exp_dir`` and the loaded update and fingerprint) before the first batch. Ranks that
see different states (a per-node ``exp_dir``, a stale network-filesystem listing) stop with a
message naming both views, instead of drifting apart silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_asr.model.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from e2e_asr.train.distributed import DistInfo, broadcast_object, gather_objects
from e2e_asr.train.errors import TrainError

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "snapshot"
# train_config keys that do not change what is trained: they may differ on resume
OPERATIONAL_KEYS = frozenset(
    {
        "log_interval",
        "num_workers",
        "snapshot_interval",
        "keep_last",
        "dev_cer",
        "ddp_timeout",
        "oom_probe",
    }
)


# ----------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """This process's RNG states as plain data (weights_only-loadable).

    On CUDA only the current device's generator is saved (a rank uses one GPU), so a resume
    with a different number of visible GPUs still finds its state.
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python_version": version,
        "python": list(internal),
        "python_gauss": gauss,
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_device"] = torch.cuda.get_rng_state()
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


def restore_rng(state: dict[str, Any]) -> list[str]:
    """Restore what ``capture_rng`` saved; returns notes on CUDA states that could not be
    restored (no GPU now, or an older per-device list longer than the visible GPUs)."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    notes: list[str] = []
    cuda = state.get("cuda_device")
    legacy = state.get("cuda")  # older checkpoints: one state per visible device
    if cuda is None and legacy is None:
        return notes
    if not torch.cuda.is_available():
        notes.append(
            "the checkpoint holds a CUDA RNG state but no GPU is visible now: GPU dropout "
            "streams start afresh (resume is within tolerance, not bit-exact)"
        )
        return notes
    if cuda is None:
        dev = torch.cuda.current_device()
        if dev < len(legacy):
            cuda = legacy[dev]
        else:
            notes.append(
                f"the checkpoint holds CUDA RNG states of {len(legacy)} GPUs, this process uses "
                f"GPU {dev}: its RNG starts afresh (resume within tolerance, not bit-exact)"
            )
            return notes
    torch.cuda.set_rng_state(cuda)
    return notes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- fingerprint
def file_identity(path: Path | None) -> dict[str, Any] | None:
    """A file by name and size (not by its path: nodes may mount storage elsewhere)."""
    if path is None:
        return None
    return {"name": Path(path).name, "size": Path(path).stat().st_size}


def run_fingerprint(
    cfg: dict[str, Any],
    data: list[dict[str, Any]],
    base: dict[str, Any] | None,
    mix: list[Any] | None = None,
) -> str:
    """What a run trains on: config (minus ``OPERATIONAL_KEYS``), data, base, source mixing."""
    tc = {k: v for k, v in cfg["train_config"].items() if k not in OPERATIONAL_KEYS}
    parts = {
        "config": {**{k: v for k, v in cfg.items() if k != "train_config"}, "train_config": tc},
        "data": data,
        "base": base,
        "mix": mix,
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------- discovery
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


def state_listing(exp_dir: Path) -> list[tuple[str, int]]:
    """``(name, size)`` of the resumable files in ``exp_dir`` (what every rank must agree on)."""
    if not exp_dir.is_dir():
        return []
    files = [p for _, p in list_checkpoints(exp_dir)] + [exp_dir / SNAPSHOT_NAME]
    return sorted((p.name, p.stat().st_size) for p in files if p.is_file())


# ----------------------------------------------------------------------------- the decision
def decide_resume(
    exp_dir: Path, mode: str, fingerprint: str
) -> tuple[Path | None, dict[str, Any] | None]:
    """Rank 0's choice: ``(path, payload)`` to resume from, or ``(None, None)`` to start anew.

    ``mode``: ``auto`` (newest valid state in ``exp_dir``; another run's state is refused),
    ``none`` (start over), or a path (that file; another run's state is only warned about).
    """
    if mode == "none":
        if state_listing(exp_dir):
            log.warning("--resume none: ignoring the training state already in %s", exp_dir)
        return None, None
    if mode == "auto":
        found = find_resume(exp_dir) if exp_dir.is_dir() else None
        if found is None:
            return None, None
        path, payload = found
        if payload["train_state"].get("fingerprint") != fingerprint:
            raise TrainError(
                f"--resume auto: {path} was written by a run with another config, data or "
                "base model; refusing to continue it silently. Use a new --exp-dir, "
                "--resume none to start over, or --resume PATH to continue it anyway"
            )
        return path, payload
    path = Path(mode)
    try:
        payload = load_checkpoint(path)
    except CheckpointError as exc:
        raise TrainError(f"--resume {path}: {exc}") from exc
    if "train_state" not in payload:
        raise TrainError(f"--resume {path}: holds no training state")
    if payload["train_state"].get("fingerprint") != fingerprint:
        log.warning("--resume %s: config/data/base differ from that run's", path)
    return path, payload


def _view(exp_dir: Path, listing: list[tuple[str, int]], loaded: str, rank: int) -> dict[str, Any]:
    return {"rank": rank, "exp_dir": str(exp_dir), "listing": listing, "loaded": loaded}


def _describe(view: dict[str, Any]) -> str:
    files = ", ".join(f"{n} ({s} bytes)" for n, s in view["listing"]) or "no training state"
    return f"rank {view['rank']} sees {view['exp_dir']}: {files}; resume point: {view['loaded']}"


def agree_on_resume(
    info: DistInfo, exp_dir: Path, mode: str, fingerprint: str
) -> tuple[Path | None, dict[str, Any] | None]:
    """Rank 0 decides, every rank loads the same file from its ``exp_dir`` and all compare.

    Returns this rank's ``(path, payload)`` (``(None, None)``: start anew). Every rank raises the
    same ``TrainError`` when rank 0 cannot decide or when any rank sees another state.
    """
    decision: dict[str, Any]
    path: Path | None = None
    payload: dict[str, Any] | None = None
    if info.is_main:
        try:
            path, payload = decide_resume(exp_dir, mode, fingerprint)
            name = None
            if path is not None:
                # relative to exp_dir when it is inside: other nodes may mount it elsewhere
                name = path.name if path.parent.resolve() == exp_dir.resolve() else str(path)
            decision = {"name": name, "error": None}
        except TrainError as exc:
            decision = {"name": None, "error": str(exc)}
    else:
        decision = {}
    decision = broadcast_object(decision, info)
    if decision["error"] is not None:
        raise TrainError(decision["error"])
    if not info.is_main and decision["name"] is not None:
        p = Path(decision["name"])
        path = p if p.is_absolute() else exp_dir / p
        try:
            payload = load_checkpoint(path)
        except CheckpointError as exc:
            payload = None
            loaded_error = f"cannot load {path}: {exc}"
        else:
            loaded_error = ""
    else:
        loaded_error = ""
    if payload is not None:
        ts = payload.get("train_state") or {}
        loaded = f"{decision['name']} at update {payload.get('step')}, fingerprint " + str(
            ts.get("fingerprint")
        )
    elif loaded_error:
        loaded = loaded_error
    else:
        loaded = "start anew" if decision["name"] is None else f"{decision['name']} missing"
    views = gather_objects(_view(exp_dir, state_listing(exp_dir), loaded, info.rank), info)
    ref = views[0]
    for v in views[1:]:
        if v["listing"] != ref["listing"] or v["loaded"] != ref["loaded"]:
            raise TrainError(
                "ranks disagree on the training state: "
                + _describe(ref)
                + " | "
                + _describe(v)
                + ". exp_dir (and the json) must be on storage shared by every node, "
                "mounted with a consistent view (no stale listing); fix that and re-run"
            )
    return path, payload


def verify_start(info: DistInfo, step: int, epoch: int, batch: int, fingerprint: str) -> None:
    """Before the first batch: every rank starts from the same update, position and run."""
    mine = (step, epoch, batch, fingerprint)
    every = gather_objects(mine, info)
    bad = [r for r, v in enumerate(every) if v != every[0]]
    if bad:
        r = bad[0]
        raise TrainError(
            f"ranks would start from different states: rank 0 at update {every[0][0]}, epoch "
            f"{every[0][1]}, batch {every[0][2]}, fingerprint {every[0][3]}; rank {r} at update "
            f"{every[r][0]}, epoch {every[r][1]}, batch {every[r][2]}, fingerprint {every[r][3]}"
        )
