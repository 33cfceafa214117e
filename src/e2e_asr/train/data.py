"""The training and dev utterances of a run, and source-data mixing.

``json_dir`` is stage 2's output: ``train.{1..json_nj}.json``, ``dev.json``. With
``--mix-json-dir D --mix-ratio R`` every epoch also trains on ``R x (number of target train
utterances)`` utterances drawn without replacement from the train json of ``D`` (the source
domain), a different draw each epoch, fixed by (seed, epoch). Mixing some source data back in
is what keeps fine-tuning from forgetting the original domain.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from e2e_asr.data.espnet_json import read_utts
from e2e_asr.data.loader import DataError

log = logging.getLogger(__name__)

MIX_PREFIX = "mix/"  # source keys are prefixed so they can never collide with target keys


def read_train_jsons(json_dir: Path, json_nj: int) -> dict[str, dict[str, Any]]:
    """Union of ``train.1.json .. train.{json_nj}.json``; a missing file or duplicate key is
    an error naming it."""
    if json_nj < 1:
        raise DataError(f"--json-nj must be >= 1, got {json_nj}")
    utts: dict[str, dict[str, Any]] = {}
    for i in range(1, json_nj + 1):
        path = json_dir / f"train.{i}.json"
        if not path.is_file():
            others = sorted(p.name for p in json_dir.glob("train.*.json"))
            raise DataError(
                f"{path}: missing (--json-nj {json_nj}; found {', '.join(others) or 'none'})"
            )
        part = read_utts(path)
        dup = next((k for k in part if k in utts), None)
        if dup is not None:
            raise DataError(f"{path}: utterance {dup} also appears in an earlier train json")
        utts.update(part)
    if not utts:
        raise DataError(f"{json_dir}: the train json files hold no utterances")
    return utts


def read_dev_json(json_dir: Path) -> dict[str, dict[str, Any]]:
    path = json_dir / "dev.json"
    if not path.is_file():
        raise DataError(f"{path}: missing (stage 2 writes it)")
    return read_utts(path)


def read_source_jsons(mix_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``train.*.json`` of the source directory, keys prefixed with ``mix/``."""
    paths = sorted(mix_dir.glob("train.*.json"))
    if not paths:
        raise DataError(f"{mix_dir}: no train.*.json to mix in (--mix-json-dir)")
    utts: dict[str, dict[str, Any]] = {}
    for path in paths:
        for key, info in read_utts(path).items():
            utts[MIX_PREFIX + key] = info
    return utts


def draw_source(
    source: dict[str, dict[str, Any]], n_target: int, ratio: float, seed: int, epoch: int
) -> dict[str, dict[str, Any]]:
    """``round(ratio * n_target)`` source utterances for ``epoch`` (all of them if fewer)."""
    if ratio <= 0 or not source:
        return {}
    want = int(round(ratio * n_target))
    keys = sorted(source)
    if want >= len(keys):
        if want > len(keys):
            log.warning(
                "mix: %d source utterances wanted, only %d exist; using all", want, len(keys)
            )
        return dict(source)
    rng = np.random.default_rng([int(seed), int(epoch), 0x6D6978])
    picked = rng.choice(len(keys), size=want, replace=False)
    return {keys[i]: source[keys[i]] for i in sorted(picked.tolist())}
