"""Guarantee 4: a full disk gives a clear error naming the path, leaves no half-written file
where a later stage would trust it, and the same command completes once there is space.

The output directory is a small tmpfs (``mount -t tmpfs -o size=…``, root only); where mounting
is not permitted the test falls back to a per-process file-size limit (RLIMIT_FSIZE, EFBIG
instead of ENOSPC) and prints so. Recovery: the tmpfs is remounted larger (or the limit lifted)
and the same command is run again.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from conftest_data import write_wav
from reliability_helpers import REPO, SmallDisk, py, run, small_disk
from test_reliability_data import check_feature_dir
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.data.features import FeatureConfig
from e2e_asr.model.checkpoint import latest_checkpoint, load_checkpoint

FULL = ("No space left on device", "File too large")


def _make_room(disk: SmallDisk) -> None:
    """More space: remount the tmpfs larger (the rlimit simulation just is not applied)."""
    if disk.how == "tmpfs":
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk.path)], check=True)


def test_feature_stage_on_a_full_disk(tmp_path: Path) -> None:
    wavs = [write_wav(tmp_path / "wav" / f"u{i}.wav", 1.0, seed=i) for i in range(6)]
    cfg = dataclasses.replace(FeatureConfig.from_yaml(REPO / "conf" / "fbank.yaml"), dither=0.0)
    conf = tmp_path / "fbank.yaml"
    conf.write_text(cfg.to_yaml(), encoding="utf-8")
    # 6 x 98 frames x 80 dims of float32 = 188 KB of features, 64 KB of disk
    with small_disk(tmp_path / "disk", 64) as disk:
        d = disk.path / "train"
        write_data_dir(d, [Utterance(w.stem, str(w), "你好", "s") for w in wavs])
        cmd = [*py("make_feats.py"), "--data-dir", str(d), "--feat-config", str(conf),
               "--nj", "2"]  # fmt: skip
        rc, text = run(cmd, tmp_path / "full.out", preexec=disk.preexec())
        assert rc == 1, text
        # the console says what and where, without opening the job logs
        line = next(x for x in text.splitlines() if x.startswith("make_feats.py: error:"))
        assert f"cannot write {d}/data/: " in line and any(f in line for f in FULL), line
        # nothing a later stage would trust: no feats.scp, no finished-job marker, no ark
        assert not (d / "feats.scp").exists() and not (d / "utt2num_frames").exists()
        leftovers = [p.name for p in (d / "data").iterdir() if p.name != "state.yaml"]
        assert leftovers == [], leftovers
        _make_room(disk)
        rc, text = run(cmd, tmp_path / "again.out")
        assert rc == 0, text
        check_feature_dir(d)


def test_checkpoint_write_on_a_full_disk(tmp_path: Path) -> None:
    json_dir = make_data_dir(tmp_path / "json", n_train=8, n_dev=1)
    base = make_base_model(tmp_path / "base" / "checkpoint.3", json_dir)
    conf = write_config(tmp_path / "conf.yaml", {"train_config": {"dev_cer": False}})
    # a checkpoint of this model is ~0.6 MB: on 1 MB checkpoint.4 fits, checkpoint.5 does not
    # (with the file-size simulation, 300 KB: checkpoint.4 already does not)
    with small_disk(tmp_path / "disk", 1024) as disk:
        if disk.how == "rlimit":
            disk.limit = 300 * 1024
        exp = disk.path / "exp"
        cmd = [
            *py("train.py"),
            "--config", str(conf), "--json-dir", str(json_dir), "--json-nj", "2",
            "--exp-dir", str(exp), "--epochs", "5", "--base-model", str(base),
            "--device", "cpu",
        ]  # fmt: skip
        rc, text = run(cmd, tmp_path / "full.out", preexec=disk.preexec())
        assert rc == 1, text[-3000:]
        failed = "checkpoint.5" if disk.how == "tmpfs" else "checkpoint.4"
        line = next(x for x in text.splitlines() if "rank 0 failed" in x)
        assert f"checkpoint {exp / failed}: cannot write it: [Errno " in line, line
        assert any(f in line for f in FULL) and "Traceback" not in text, text[-3000:]
        # no half-written checkpoint, no temp file; what is there loads and is the newest
        assert not (exp / failed).exists()
        assert not list(exp.glob(".*.tmp"))
        if failed == "checkpoint.5":
            assert load_checkpoint(exp / "checkpoint.4")["epoch"] == 4
            assert latest_checkpoint(exp) == exp / "checkpoint.4"
        else:
            assert latest_checkpoint(exp) is None
        _make_room(disk)
        rc, text = run(cmd, tmp_path / "again.out")
        assert rc == 0, text[-3000:]
        if failed == "checkpoint.5":
            assert f"resuming from {exp / 'checkpoint.4'}" in text
        assert load_checkpoint(exp / "checkpoint.5")["epoch"] == 5
