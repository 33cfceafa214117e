"""Guarantees 1 and 3: training killed with SIGKILL (mid-epoch, during validation, while a
checkpoint is written) and re-run with the same command ends with exactly the weights of an
uninterrupted run; a corrupted newest checkpoint is named and skipped for the previous one.

All runs are subprocesses on CPU with one thread. The reference run goes through
``./run.sh --stage 3 --stop-stage 3`` (torchrun, ``--resume auto``); the killed runs and the
re-runs are the command it launches, ``steps/train.py … --resume auto``, and one re-run is the
``./run.sh --stage 3`` command itself. The kill is a real SIGKILL of the process group at an
exact point (tests/reliability_inject/sitecustomize.py), so nothing gets to clean up.

Tiny model, base checkpoint.3; epochs 4 and 5 are trained, 6 updates each (updates 11..22),
snapshot every 4 updates (12, 16, 20), so each kill point resumes from a different state.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from reliability_helpers import REPO, assert_same_training_state, finish, py, start
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint

CHANGES = {
    "train_config": {"snapshot_interval": 4, "dev_cer": True, "log_interval": 1},
    "model_config": {"encoder_dropout_rate": 0.1, "decoder_dropout_rate": 0.1},
    "trans_config": [
        {"type": "time_mask", "T": 5, "n_mask": 1, "replace_with_zero": False, "prob": 0.5},
        {"type": "freq_mask", "F": 3, "n_mask": 1, "replace_with_zero": True},
    ],
}

# name -> (injection spec, state the re-run must resume from)
KILLS = {
    "mid_epoch": ("point=update,step=19,group=1", "checkpoint.4: update 16, epoch 5, batch 0"),
    "validation": ("point=validation,call=2,group=1", "snapshot: update 20, epoch 5, batch 4"),
    "checkpoint_write": (
        "point=save,name=checkpoint.5,group=1",
        "snapshot: update 20, epoch 5, batch 4",
    ),
}


def _train_cmd(s: dict, exp: Path) -> list[str]:
    return [
        *py("train.py"),
        "--config", str(s["conf"]),
        "--json-dir", str(s["json_dir"]),
        "--json-nj", "2",
        "--exp-dir", str(exp),
        "--epochs", "5",
        "--base-model", str(s["base"]),
        "--resume", "auto",
        "--device", "cpu",
    ]  # fmt: skip


def _run_sh_cmd(s: dict, exp: Path) -> list[str]:
    return [
        str(REPO / "run.sh"),
        "--stage", "3", "--stop-stage", "3",
        "--output-dir", str(s["out"]),
        "--exp-dir", str(exp),
        "--base-model", str(s["base"]),
        "--train-config", str(s["conf"]),
        "--json-nj", "2",
        "--epochs", "5",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every training process of this module, run two phases of side-by-side processes."""
    tmp = tmp_path_factory.mktemp("rel_train")
    out = tmp / "output"
    json_dir = make_data_dir(out / "preparejson" / "split_train_dev", n_train=12, n_dev=2)
    s: dict = {
        "tmp": tmp,
        "out": out,
        "json_dir": json_dir,
        "base": make_base_model(tmp / "base" / "checkpoint.3", json_dir, epoch=3, step=10),
        "conf": write_config(tmp / "conf.yaml", CHANGES),
    }
    # phase 1: the uninterrupted reference and the three killed runs
    ref = start(_train_cmd(s, tmp / "ref"), tmp / "ref.out")
    killed = {
        name: start(_train_cmd(s, tmp / name), tmp / f"{name}.killed.out", kill=spec)
        for name, (spec, _) in KILLS.items()
    }
    s["ref"] = (finish(ref), ref.text)
    s["killed"] = {name: (finish(p), p.text) for name, p in killed.items()}
    for name in KILLS:
        # what the killed run left, before the re-run changes it
        exp = tmp / name
        s[f"{name}.left"] = {
            "checkpoint.5": (exp / "checkpoint.5").exists(),
            "partial": [p.stat().st_size for p in exp.glob(".checkpoint.5.*.tmp")],
        }
    # phase 2: the same commands again (one as ./run.sh --stage 3), and resumes past a
    # damaged newest checkpoint
    again = {
        name: start(
            _run_sh_cmd(s, tmp / name) if name == "mid_epoch" else _train_cmd(s, tmp / name),
            tmp / f"{name}.rerun.out",
        )
        for name in KILLS
    }
    if s["ref"][0] == 0:
        for damage, fn in DAMAGE.items():
            exp = tmp / f"corrupt_{damage}"
            shutil.copytree(tmp / "ref", exp)
            fn(exp / "checkpoint.5")
            again[f"corrupt_{damage}"] = start(_train_cmd(s, exp), tmp / f"corrupt_{damage}.out")
    s["again"] = {name: (finish(p), p.text) for name, p in again.items()}
    return s


def test_reference_run_completes(runs: dict) -> None:
    rc, text = runs["ref"]
    assert rc == 0, text[-3000:]
    ref = load_checkpoint(runs["tmp"] / "ref" / "checkpoint.5")
    assert ref["step"] == 22 and ref["epoch"] == 5


@pytest.mark.parametrize("name", list(KILLS))
def test_sigkilled_training_rerun_equals_uninterrupted(runs: dict, name: str) -> None:
    tmp = runs["tmp"]
    exp = tmp / name
    rc, text = runs["killed"][name]
    assert rc == -9, text[-3000:]  # really killed, by SIGKILL
    assert "reliability_inject: SIGKILL at" in text
    left = runs[f"{name}.left"]
    assert not left["checkpoint.5"]
    if name == "checkpoint_write":
        # the half-written temp file was on disk, under a name nothing trusts
        assert len(left["partial"]) == 1 and left["partial"][0] > 0
    if name == "validation":
        assert "epoch 5 done" not in text and "step [6/6] update 22" in text
    rc, text = runs["again"][name]
    assert rc == 0, text[-3000:]
    where, resumed = KILLS[name][1].split(": ", 1)
    assert f"resuming from {exp / where}: {resumed}" in text, text[-3000:]
    assert_same_training_state(
        load_checkpoint(tmp / "ref" / "checkpoint.5"), load_checkpoint(exp / "checkpoint.5")
    )
    assert sorted(p.name for p in exp.glob("checkpoint.*")) == ["checkpoint.4", "checkpoint.5"]
    # the killed write's temp file is removed by the re-run (not kept, never trusted)
    assert not list(exp.glob(".*.tmp"))
    if name == "checkpoint_write":
        assert "(left by a run killed while writing it)" in text


def _flip_tensor_bytes(path: Path) -> None:
    """Flip bytes inside the largest tensor of a torch zip checkpoint (size unchanged)."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start_of_data = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(16):
        data[start_of_data + info.file_size // 2 + i] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


DAMAGE = {"bit_flip": _flip_tensor_bytes, "truncated": _truncate}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_corrupt_newest_checkpoint_is_named_and_previous_one_used(runs: dict, damage: str) -> None:
    exp = runs["tmp"] / f"corrupt_{damage}"
    ck5 = exp / "checkpoint.5"
    rc, text = runs["again"][f"corrupt_{damage}"]
    assert rc == 0, text[-3000:]
    # --resume auto names the damaged file, skips it and continues from checkpoint.4
    assert f"resume: skipping {ck5}: checkpoint {ck5}: " in text, text[-3000:]
    assert f"resuming from {exp / 'checkpoint.4'}: update 16, epoch 5, batch 0" in text
    # epoch 5 was trained again, and checkpoint.5 is whole and equal to the reference's
    assert_same_training_state(
        load_checkpoint(runs["tmp"] / "ref" / "checkpoint.5"), load_checkpoint(ck5)
    )


def test_bit_flip_is_detected_by_load_checkpoint(tmp_path: Path) -> None:
    """torch.load alone loads flipped tensor bytes silently; load_checkpoint checks CRCs."""
    import torch

    from e2e_asr.model.checkpoint import save_checkpoint

    path = tmp_path / "checkpoint.2"
    save_checkpoint(path, {"model": {"w": torch.arange(4096, dtype=torch.float32)}, "epoch": 2})
    _flip_tensor_bytes(path)
    silently = torch.load(path, weights_only=True)["model"]["w"]
    assert not torch.equal(silently, torch.arange(4096, dtype=torch.float32))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: corrupt \(Bad CRC-32"):
        load_checkpoint(path)
