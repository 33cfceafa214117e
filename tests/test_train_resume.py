"""Exact resume: a run that dies mid-epoch and is resumed ends with the same weights,
optimizer state and LR as one that never stopped (CPU, deterministic, accum_grad 2, dropout
and SpecAugment on, so RNG state and batch position both matter)."""

from __future__ import annotations

import shutil

import pytest
import torch
from reliability_helpers import py
from reliability_helpers import run as run_cmd
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.model.checkpoint import load_checkpoint
from e2e_asr.train.scheduler import NoamSchedule, WarmupDecaySchedule
from e2e_asr.train.trainer import TrainArgs, run

CHANGES = {
    "train_config": {"accum_grad": 2, "snapshot_interval": 1, "dev_cer": False},
    "model_config": {"encoder_dropout_rate": 0.1, "decoder_dropout_rate": 0.1},
    "trans_config": [
        {"type": "time_mask", "T": 5, "n_mask": 1, "replace_with_zero": False, "prob": 0.5},
        {"type": "freq_mask", "F": 3, "n_mask": 1, "replace_with_zero": True},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """In-process runs with one thread, as the injected subprocess (bit-equal reductions)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict:
    tmp = tmp_path_factory.mktemp("resume")
    data = make_data_dir(tmp / "data", n_train=12, n_dev=1)
    base = make_base_model(tmp / "base" / "checkpoint.3", data, epoch=3, step=10)
    conf = write_config(tmp / "conf.yaml", CHANGES)
    ref = TrainArgs(
        config=conf,
        json_dir=data,
        exp_dir=tmp / "ref",
        json_nj=2,
        epochs=4,
        base_model=base,
        device="cpu",
    )
    assert run(ref) == 0
    # the same run, failing (an exception injected by tests/reliability_inject) right after
    # update 12: 6 batches per epoch and accum_grad 2 make epoch 4 = updates 11..13, so it dies
    # after batch 4 of 6
    cmd = [*py("train.py"), "--config", str(conf), "--json-dir", str(data),
           "--exp-dir", str(tmp / "killed"), "--epochs", "4", "--base-model", str(base),
           "--device", "cpu"]  # fmt: skip
    rc, text = run_cmd(cmd, tmp / "killed.out", kill="point=update,step=12,action=raise")
    assert rc == 1, text[-3000:]
    return {
        "tmp": tmp,
        "data": data,
        "base": base,
        "conf": conf,
        "ref": ref.exp_dir,
        "killed": tmp / "killed",
    }


def _copy_killed(setup: dict, name: str) -> TrainArgs:
    exp = setup["tmp"] / name
    shutil.copytree(setup["killed"], exp)
    return TrainArgs(
        config=setup["conf"],
        json_dir=setup["data"],
        exp_dir=exp,
        json_nj=2,
        epochs=4,
        base_model=setup["base"],
        device="cpu",
    )


def _same_state(a: dict, b: dict) -> None:
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["step"] == b["step"]
    assert a["scheduler"] == b["scheduler"]
    for ga, gb in zip(a["optimizer"]["param_groups"], b["optimizer"]["param_groups"], strict=True):
        assert ga["lr"] == gb["lr"]
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_killed_mid_epoch_then_resumed_equals_uninterrupted(setup: dict) -> None:
    args = _copy_killed(setup, "resumed")
    exp = args.exp_dir
    assert "failure injected at update 12" in (exp / "train.log").read_text()
    # the failure came right after update 12, before its snapshot: update 11's is the newest
    snap = load_checkpoint(exp / "snapshot")
    assert snap["step"] == 11 and snap["train_state"]["batch"] == 2
    assert not (exp / "checkpoint.4").exists()
    assert run(args) == 0
    log = (exp / "train.log").read_text()
    assert "resuming from" in log and "update 11, epoch 4, batch 2" in log
    ref = load_checkpoint(setup["ref"] / "checkpoint.4")
    got = load_checkpoint(exp / "checkpoint.4")
    assert got["step"] == 13  # updates counted per accum_grad group, not per batch
    assert got["scheduler"]["step"] == 13
    _same_state(ref, got)


def test_corrupt_snapshot_is_skipped_by_name(setup: dict) -> None:
    args = _copy_killed(setup, "corrupt")
    snap = args.exp_dir / "snapshot"
    snap.write_bytes(snap.read_bytes()[:200])  # truncated, as by a full disk
    assert run(args) == 0
    log = (args.exp_dir / "train.log").read_text()
    assert f"skipping {snap}" in log
    # nothing else to resume: the run starts over from the base model, and still ends equal
    assert "resuming from" not in log.split("skipping")[-1]
    _same_state(
        load_checkpoint(setup["ref"] / "checkpoint.4"),
        load_checkpoint(args.exp_dir / "checkpoint.4"),
    )


def test_auto_resume_refuses_another_runs_state(setup: dict) -> None:
    other = write_config(setup["tmp"] / "other.yaml", {**CHANGES, "opti_config": {"factor": 0.1}})
    args = TrainArgs(
        config=other,
        json_dir=setup["data"],
        exp_dir=setup["ref"],
        json_nj=2,
        epochs=6,
        base_model=setup["base"],
        device="cpu",
    )
    before = (setup["ref"] / "checkpoint.4").stat().st_mtime_ns
    assert run(args) == 1
    assert "another config" in (setup["ref"] / "train.log").read_text()
    assert not (setup["ref"] / "checkpoint.5").exists()
    assert (setup["ref"] / "checkpoint.4").stat().st_mtime_ns == before


def test_schedules_are_functions_of_the_update_count() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([{"params": [p], "lr_scale": 0.5}])
    noam = NoamSchedule(opt, factor=1.0, warm_step=4, model_size=16)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        noam.step()
    assert lrs[0] == pytest.approx(0.5 * 16**-0.5 * 1 * 4**-1.5)
    assert max(lrs) == lrs[3]  # peak at warm_step (update 4)
    state = noam.state_dict()
    again = NoamSchedule(opt, factor=1.0, warm_step=4, model_size=16)
    again.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * noam.lr_at(9))
    lin = WarmupDecaySchedule(opt, lr=1.0, warm_step=2, decay="linear", decay_steps=4)
    assert [round(lin.lr_at(s), 3) for s in (1, 2, 4, 6, 9)] == [0.5, 1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="noam"):
        lin.load_state_dict(state)
