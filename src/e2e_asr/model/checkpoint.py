"""Checkpoint files: atomic writes, weights-only loading, model rebuild from the payload.

A payload is a plain dict (see docs/interfaces.md): `model` (state_dict, ESPnet1 names),
`config` (with `model_config`, `criterion_config`), `units`, `feature_config`, `epoch`,
`step`, and for training state `optimizer scheduler scaler rng train_state validation`.
Only tensors and plain Python types may go in, so that `weights_only=True` loading works:
loading never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from e2e_asr.data.io import atomic_path, fsync_dir
from e2e_asr.model.e2e import E2EModel, build_model

CHECKPOINT_RE = re.compile(r"^checkpoint\.(\d+)$")


class CheckpointError(Exception):
    """A checkpoint cannot be read or used; the message names the file."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (``e2e_asr.data.io.atomic_path``: temp file in the
    same dir, fsync, rename), then persist the rename."""
    path = Path(path)
    try:
        # through a Python file object: a full disk then surfaces as the OSError (ENOSPC) of a
        # write, whereas torch's own file writer may only report "unexpected pos"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(payload, fh)
    except BaseException as e:
        cause = _os_error(e)
        if cause is None:
            raise
        # torch reports a full disk as "[enforce fail at inline_container.cc] unexpected pos"
        raise CheckpointError(
            f"checkpoint {path}: cannot write it: {cause}; the temp file was removed and "
            f"any earlier {path.name} is unchanged (free space in {path.parent} and re-run)"
        ) from e
    # Persist the rename itself, so a crash right after cannot lose the new file.
    fsync_dir(path.parent)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError (disk full, file too large, I/O error …) behind ``exc``, if any."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _verify_zip_crc(path: Path) -> None:
    """Check the CRC-32 of every member of a torch zip checkpoint.

    ``torch.load`` does not: flipped bytes inside a tensor load silently as wrong weights.
    Members stored with CRC 0 (writers with CRC computation switched off) are not checked;
    files that are not zip archives (legacy format) are left to ``torch.load``.
    """
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0 or info.is_dir():
                    continue
                with z.open(info) as member:
                    while member.read(1 << 22):
                        pass
    except zipfile.BadZipFile as e:
        if not zipfile.is_zipfile(path):
            return  # not a zip (legacy pickle or garbage): torch.load decides
        raise CheckpointError(f"checkpoint {path}: corrupt ({e})") from e
    except (OSError, EOFError, zlib.error) as e:
        raise CheckpointError(f"checkpoint {path}: truncated or corrupt ({e})") from e


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a payload on CPU with `weights_only=True`; `CheckpointError` if unusable."""
    path = Path(path)
    if path.is_dir():
        newest = sorted(
            (int(m.group(1)), p.name)
            for p in path.iterdir()
            if (m := CHECKPOINT_RE.match(p.name)) and p.is_file()
        )
        hint = f" (newest there: {path / newest[-1][1]})" if newest else ""
        raise CheckpointError(
            f"checkpoint {path}: is a directory; give a checkpoint file, e.g. {path}/checkpoint.N"
            + hint
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise CheckpointError(
            f"checkpoint {path}: not a PyTorch checkpoint (neither a torch.save zip nor a "
            "pickle; a text or other file?)"
        )
    _verify_zip_crc(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses globals it does not know: the file wants to run code or
        # holds objects that are not plain data.
        raise CheckpointError(
            f"checkpoint {path}: refused, it holds objects other than tensors and plain "
            f"Python data (loading it could run code): {str(e).splitlines()[0]}"
        ) from e
    except Exception as e:  # noqa: BLE001 - any failure to read it means it is damaged
        # garbage bytes fail in many ways (RuntimeError, EOFError, IndexError from the
        # unpickler's stack, ...): all of them mean "this file is not a usable checkpoint"
        raise CheckpointError(
            f"checkpoint {path}: truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"checkpoint {path}: not a checkpoint payload (no 'model' entry)")
    return payload


def base_model_info(path: str | os.PathLike) -> tuple[list[str], dict[str, Any] | None]:
    """Units and the recorded feature config (None if absent) of a base model checkpoint."""
    payload = load_checkpoint(path)
    if not isinstance(payload.get("units"), list):
        raise CheckpointError(f"checkpoint {path}: has no 'units' list")
    return [str(u) for u in payload["units"]], payload.get("feature_config")


def load_model(
    path_or_payload: str | os.PathLike | dict[str, Any],
) -> tuple[E2EModel, dict[str, Any]]:
    """Rebuild the model from `payload["config"]`, load its weights (strict), eval mode."""
    if isinstance(path_or_payload, dict):
        payload, where = path_or_payload, "payload"
    else:
        payload, where = load_checkpoint(path_or_payload), f"checkpoint {path_or_payload}"
    config = payload.get("config") or {}
    if "model_config" not in config or "criterion_config" not in config:
        raise CheckpointError(f"{where}: config lacks model_config/criterion_config")
    try:
        model = build_model(config["model_config"], config["criterion_config"])
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e
    load_weights(model, payload["model"], where)
    model.eval()
    return model, payload


def load_weights(model: torch.nn.Module, state_dict: dict[str, Any], where: str) -> None:
    """THE strict state-dict check: every weight present, none left over, shapes equal;
    otherwise ``CheckpointError`` naming ``where`` and the first offending keys."""
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches, e.g. another number of units
        raise CheckpointError(
            f"{where}: weights do not match its model_config: {str(e).splitlines()[-1].strip()}"
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not match its model_config; "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def list_checkpoints(exp_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """THE ``checkpoint.N`` scanner: ``(N, path)`` of every regular file named
    ``checkpoint.<digits>`` in ``exp_dir``, highest N first (none if the dir is missing)."""
    d = Path(exp_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def latest_checkpoint(
    exp_dir: str | os.PathLike, skipped: Callable[[Path, CheckpointError], None] | None = None
) -> Path | None:
    """Highest-numbered `checkpoint.N` in `exp_dir` that loads; None if there is none.
    ``skipped(path, error)`` is told about each newer one that does not load."""
    for _, p in list_checkpoints(exp_dir):
        try:
            load_checkpoint(p)
        except CheckpointError as e:
            if skipped is not None:
                skipped(p, e)
            continue
        return p
    return None
