"""Checkpoint averaging (stage 4): a range of epochs, or the N best by a validation metric.

Floating-point tensors are summed in float64 and cast back, so averaging many checkpoints
loses no precision; integer buffers (step counters and the like) are copied from the newest
checkpoint. The result is an ordinary checkpoint payload without training state.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint
from e2e_asr.model.checkpoint import list_checkpoints as scan_checkpoints

# Training state that does not belong in an averaged model; "lora" holds one checkpoint's adapters
# (its "model" already holds the merged weights, which are what gets averaged).
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "rng", "train_state", "validation", "lora")
METRICS = ("dev_cer", "dev_loss")


class AverageError(ValueError):
    """Averaging cannot proceed; the message names the directory or file."""


def list_checkpoints(exp_dir: str | os.PathLike) -> dict[int, Path]:
    """``checkpoint.N`` files in ``exp_dir`` by epoch (``e2e_asr.model.checkpoint``'s scanner)."""
    d = Path(exp_dir)
    if not d.is_dir():
        raise AverageError(f"{d}: no such directory")
    return dict(scan_checkpoints(d))


def select_range(
    exp_dir: str | os.PathLike, start: int, end: int, warn: Callable[[str], None]
) -> list[Path]:
    """Seed semantics: epochs start..end-1 (``37 40`` -> 37, 38, 39)."""
    if end <= start:
        raise AverageError(f"average range {start} {end}: end must be greater than start")
    have = list_checkpoints(exp_dir)
    wanted = list(range(start, end))
    found = [e for e in wanted if e in have]
    if not found:
        raise AverageError(
            f"{exp_dir}: none of checkpoint.{start}..checkpoint.{end - 1} exists "
            f"(present: {_epochs_str(sorted(have))})"
        )
    if len(found) < len(wanted):
        missing = [e for e in wanted if e not in have]
        warn(
            f"asked for {len(wanted)} checkpoints ({start}..{end - 1}) but "
            f"{_epochs_str(missing)} missing; averaging the {len(found)} found: "
            f"{_epochs_str(found)}"
        )
    return [have[e] for e in found]


def _epochs_str(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if epochs else "none"


def read_train_log(path: Path, warn: Callable[[str], None]) -> dict[int, dict[str, float]]:
    """``{"epoch": N, "dev_loss": ..., "dev_cer": ...}`` lines; a later line for the same
    epoch (a resumed run) wins. Lines of other kinds are ignored."""
    out: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # a writer killed mid-line; earlier lines are still good
                warn(f"{path}:{lineno}: ignoring a truncated last line ({e.msg})")
                continue
            raise AverageError(f"{path}:{lineno}: not a JSON line: {e.msg}") from None
        if not isinstance(rec, dict) or "epoch" not in rec:
            continue
        vals = {k: rec[k] for k in METRICS if isinstance(rec.get(k), int | float)}
        if vals:
            out.setdefault(int(rec["epoch"]), {}).update(vals)
    return out


def select_best(
    exp_dir: str | os.PathLike, num: int, metric: str, warn: Callable[[str], None]
) -> list[Path]:
    """The ``num`` checkpoints with the lowest ``metric`` (dev_cer or dev_loss).

    Metrics come from ``EXP_DIR/train_log.jsonl`` where present (no need to load large
    files), else from each checkpoint's ``validation`` entry.
    """
    if metric not in METRICS:
        raise AverageError(f"--best-by {metric}: expected one of {', '.join(METRICS)}")
    if num < 1:
        raise AverageError(f"--num {num}: must be >= 1")
    have = list_checkpoints(exp_dir)
    if not have:
        raise AverageError(f"{exp_dir}: no checkpoint.N files")
    log = read_train_log(Path(exp_dir) / "train_log.jsonl", warn)
    scored: list[tuple[float, int]] = []
    unscored: list[int] = []
    for epoch, path in sorted(have.items()):
        value = log.get(epoch, {}).get(metric)
        if value is None:
            try:
                val = load_checkpoint(path).get("validation") or {}
            except CheckpointError as e:
                warn(f"skipping unreadable {e}")
                continue
            value = val.get(metric) if isinstance(val, dict) else None
        if value is None:
            unscored.append(epoch)
        else:
            scored.append((float(value), epoch))
    if unscored:
        warn(f"no {metric} for epoch(s) {_epochs_str(unscored)}; they are not candidates")
    if not scored:
        raise AverageError(
            f"{exp_dir}: no checkpoint has a {metric} (neither in train_log.jsonl nor in "
            "the checkpoints' validation entry); use the START END form instead"
        )
    scored.sort()  # lowest metric first; ties go to the earlier epoch
    if len(scored) < num:
        warn(f"asked for the {num} best by {metric} but only {len(scored)} have one; using all")
    chosen = scored[:num]
    warn(
        "averaging by "
        + metric
        + ": "
        + ", ".join(
            f"checkpoint.{e} ({metric} {v:g})" for v, e in sorted(chosen, key=lambda x: x[1])
        )
    )
    return [have[e] for _, e in sorted(chosen, key=lambda x: x[1])]


def average_payloads(paths: list[Path]) -> dict[str, Any]:
    """Mean of the ``model`` state_dicts of ``paths``, one file in memory at a time.

    Metadata (config, units, feature_config, epoch, step, cmvn) comes from the last file, i.e.
    the newest when ``paths`` is in epoch order.
    """
    if not paths:
        raise AverageError("no checkpoints to average")
    acc: dict[str, torch.Tensor] = {}
    ref_meta: dict[str, Any] = {}
    first = paths[0]
    for i, path in enumerate(paths):
        payload = load_checkpoint(path)
        state = payload["model"]
        if i == 0:
            for k, v in state.items():
                acc[k] = v.to(torch.float64).clone() if v.is_floating_point() else v.clone()
        else:
            if set(state) != set(acc):
                diff = sorted(set(state) ^ set(acc))[:5]
                raise AverageError(f"{path}: parameter names differ from {first}: {diff}")
            for k, v in state.items():
                if v.shape != acc[k].shape:
                    raise AverageError(
                        f"{path}: {k} has shape {tuple(v.shape)}, {first} has {tuple(acc[k].shape)}"
                    )
                if v.is_floating_point():
                    acc[k] += v.to(torch.float64)
                else:
                    acc[k] = v.clone()  # integer buffers: keep the newest
        ref_meta = {k: v for k, v in payload.items() if k != "model"}
        ref_dtypes = {k: v.dtype for k, v in state.items()}
        del payload, state
    n = len(paths)
    model = {
        k: (v / n).to(ref_dtypes[k]) if ref_dtypes[k].is_floating_point else v
        for k, v in acc.items()
    }
    out = {k: v for k, v in ref_meta.items() if k not in TRAINING_KEYS}
    out["model"] = model
    out["averaged_from"] = [p.name for p in paths]
    return out


def _stderr(msg: str) -> None:
    print(f"average_checkpoints: {msg}", file=sys.stderr)


def average_checkpoints(
    exp_dir: str | os.PathLike,
    out: str | os.PathLike,
    start: int | None = None,
    end: int | None = None,
    num: int | None = None,
    best_by: str | None = None,
    warn: Callable[[str], None] = _stderr,
) -> list[Path]:
    """Select, average and atomically write the result to ``out``; returns the inputs."""
    from e2e_asr.model.checkpoint import save_checkpoint

    if num is not None:
        paths = select_best(exp_dir, num, best_by or "dev_loss", warn)
    elif start is not None and end is not None:
        paths = select_range(exp_dir, start, end, warn)
    else:
        raise AverageError("give START END, or --num N [--best-by dev_cer|dev_loss]")
    save_checkpoint(out, average_payloads(paths))
    return paths


def plan_average(
    base_epoch: int,
    epochs: int,
    start: int | None = None,
    end: int | None = None,
    num: int = 0,
    last: int = 3,
) -> tuple[int, int] | int:
    """What stage 4 will average in a run that trains epochs ``base_epoch+1 .. epochs``,
    decided before training starts: ``(start, end)`` (seed semantics, start..end-1) or, with
    ``num > 0``, ``num`` (the N best by dev CER). Without an explicit range, the last ``last``
    trained epochs (all of them when the run trains fewer). A range the run cannot produce is
    an ``AverageError`` that says what to give instead."""
    first = base_epoch + 1
    if epochs < first:
        raise AverageError(
            f"--epochs {epochs} trains nothing: the base model is epoch {base_epoch}; "
            f"give --epochs {base_epoch + 10} (or any number above {base_epoch})"
        )
    trained = epochs - base_epoch
    if num > 0:
        if (start, end) != (None, None):
            raise AverageError("give either --avg-num N or --avg-start/--avg-end, not both")
        if num > trained:
            raise AverageError(
                f"--avg-num {num}: this run trains only {trained} epoch(s) "
                f"({first}..{epochs}); give --avg-num {trained} or raise --epochs"
            )
        return num
    if start is None and end is None:
        if last < 1:
            raise AverageError(f"--avg-last {last}: must be >= 1")
        return max(first, epochs - last + 1), epochs + 1
    if start is None or end is None:
        raise AverageError("give both --avg-start and --avg-end (or neither: the last epochs)")
    if end <= start or start < first or end > epochs + 1:
        n = min(max(end - start, 1), trained)
        raise AverageError(
            f"--avg-start {start} --avg-end {end} averages checkpoint.{start}..{end - 1}, but "
            f"this run trains epochs {first}..{epochs}; give --avg-start {epochs - n + 1} "
            f"--avg-end {epochs + 1}, or leave both empty to average the last epochs"
        )
    return start, end
