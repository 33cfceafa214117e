"""Resume discovery and checkpoint pruning in an exp dir."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from e2e_asr.model.checkpoint import save_checkpoint
from e2e_asr.train.resume import find_resume, prune_checkpoints


def _state(path: Path, step: int, done: bool) -> None:
    save_checkpoint(
        path,
        {
            "model": {"w": torch.zeros(1)},
            "optimizer": {},
            "step": step,
            "train_state": {"done": done, "epoch": 1, "batch": 0},
        },
    )


def test_find_resume_takes_the_newest_valid_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _state(tmp_path / "checkpoint.1", step=10, done=True)
    _state(tmp_path / "checkpoint.2", step=20, done=True)
    path, payload = find_resume(tmp_path)
    assert path.name == "checkpoint.2" and payload["step"] == 20
    _state(tmp_path / "snapshot", step=25, done=False)
    assert find_resume(tmp_path)[0].name == "snapshot"
    _state(tmp_path / "snapshot", step=15, done=False)  # older than checkpoint.2
    assert find_resume(tmp_path)[0].name == "checkpoint.2"
    (tmp_path / "checkpoint.2").write_bytes(b"\x00" * 50)
    with caplog.at_level(logging.WARNING):
        path, _ = find_resume(tmp_path)
    assert path.name == "snapshot"  # step 15 beats checkpoint.1's 10
    assert f"skipping {tmp_path / 'checkpoint.2'}" in caplog.text


def test_base_like_checkpoint_without_train_state_is_not_resumed(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "checkpoint.9", {"model": {"w": torch.zeros(1)}, "step": 3})
    assert find_resume(tmp_path) is None


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for n in (1, 2, 3, 10):
        _state(tmp_path / f"checkpoint.{n}", step=n, done=True)
    assert prune_checkpoints(tmp_path, 0) == []
    removed = prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["checkpoint.1", "checkpoint.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.10", "checkpoint.3"]
