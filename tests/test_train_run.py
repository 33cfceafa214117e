"""``run()`` as a user meets it: one config read with every override, Ctrl-C, out-of-memory,
the LR report, the shard list stage 2 recorded. Tiny model, CPU pinned, in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.model import E2EModel
from e2e_asr.model.checkpoint import load_checkpoint
from e2e_asr.train import trainer as trainer_mod
from e2e_asr.train.data import SHARD_RECORD
from e2e_asr.train.trainer import TrainArgs, run


@pytest.fixture
def env(tmp_path: Path) -> dict:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data, epoch=3, step=10)
    conf = write_config(tmp_path / "conf.yaml", {"train_config": {"dev_cer": False}})
    return {"tmp": tmp_path, "data": data, "base": base, "conf": conf}


def _args(env: dict, exp: str = "exp", **kw) -> TrainArgs:
    base = dict(config=env["conf"], json_dir=env["data"], exp_dir=env["tmp"] / exp, epochs=4,
                base_model=env["base"], device="cpu")  # fmt: skip
    base.update(kw)
    return TrainArgs(**base)


def _log(args: TrainArgs) -> str:
    return (args.exp_dir / "train.log").read_text(encoding="utf-8")


def test_overrides_reach_every_reader_and_operational_keys_do_not_block_resume(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float] = []
    real = trainer_mod.init_distributed

    def spy(device: str, timeout: float):
        seen.append(timeout)
        return real(device, timeout)

    monkeypatch.setattr(trainer_mod, "init_distributed", spy)
    args = _args(env, max_steps=1, overrides=["train_config.ddp_timeout=1234"])
    assert run(args) == 0, _log(args)
    assert seen == [1234.0]  # the process group gets the override, not the yaml's 600
    assert "train_config.ddp_timeout: 1234" in _log(args)
    # raising the timeout (as after an NCCL timeout) or logging more often: the same run
    again = _args(env, overrides=["train_config.ddp_timeout=99", "train_config.log_interval=5"])
    assert run(again) == 0, _log(again)
    assert "resuming from" in _log(again) and "another config" not in _log(again)
    assert load_checkpoint(again.exp_dir / "checkpoint.4")["step"] == 12


def test_ctrl_c_ends_in_one_line_saying_how_to_resume(
    env: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def interrupted(self) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "fit", interrupted)
    args = _args(env)
    assert run(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Traceback" not in _log(args)
    lines = [ln for ln in _log(args).splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and "re-run the same command to resume" in lines[0]


def _oom_on_call(n: int):
    real = E2EModel.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (fake)")
        return real(self, *args, **kwargs)

    return forward


def test_oom_during_training_names_the_batch_and_the_way_past_it(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(E2EModel, "forward", _oom_on_call(2))
    args = _args(env)
    assert run(args) == 1
    log = _log(args)
    assert "rank 0 failed: TrainError: out of memory in epoch 4, batch 2 of 2 (rank 0)" in log
    assert "keys utt0" in log and "jconfig.batch_size (now 2)" in log
    assert "--resume EXP/checkpoint.N" in log and "Traceback" not in log


def test_oom_probe_fails_before_the_first_update(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(E2EModel, "forward", _oom_on_call(1))
    args = _args(env, overrides=["train_config.oom_probe=true"])  # auto: GPU only
    assert run(args) == 1
    log = _log(args)
    assert "out of memory in the start-up probe" in log
    assert re.search(r"epoch 4, batch \d+ of train\.\d\.json", log)
    assert "update 11" not in log and not (args.exp_dir / "snapshot").exists()


def test_probe_that_fits_changes_nothing(env: dict) -> None:
    plain = _args(env, "plain")
    probed = _args(env, "probed", overrides=["train_config.oom_probe=true"])
    assert run(plain) == 0 and run(probed) == 0
    assert "start-up probe, epoch 4, batch" in _log(probed) and "fits" in _log(probed)
    a = load_checkpoint(plain.exp_dir / "checkpoint.4")["model"]
    b = load_checkpoint(probed.exp_dir / "checkpoint.4")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lr_report_and_warning_when_fine_tuning_would_barely_move(env: dict) -> None:
    # the seed's way: Noam continued from the base at a tiny factor
    args = _args(env, overrides=["opti_config.factor=0.01"])
    assert run(args) == 0
    log = _log(args)
    assert "LR: this run starts at" in log and "the base model ended at" in log
    assert "fine-tuning would barely move the model" in log
    # the default schedule: warmup_decay with lr auto = half the base's peak, no warning
    conf = write_config(
        env["tmp"] / "ft.yaml",
        {"opti_config": {"name": "warmup_decay", "lr": "auto", "warm_step": 2},
         "train_config": {"noam_restart": True, "dev_cer": False}},
    )  # fmt: skip
    args = _args(env, "auto_lr", config=conf)
    assert run(args) == 0, _log(args)
    log = _log(args)
    assert "opti_config.lr: auto = 0.5 x the base model's peak LR" in log
    assert "barely move" not in log
    peak = 5.0 * 32**-0.5 * 20**-0.5  # the tiny base's Noam peak
    assert load_checkpoint(args.exp_dir / "checkpoint.4")["config"]["opti_config"][
        "lr"
    ] == pytest.approx(0.5 * peak)


def test_shards_come_from_what_stage2_recorded(env: dict) -> None:
    data = env["data"]
    (data / SHARD_RECORD).write_text("train.1.json\ntrain.2.json\n")
    args = _args(env)  # no json_nj
    assert run(args) == 0, _log(args)
    assert "4 train / 1 dev utterances" in _log(args)
    bad = _args(env, "bad", json_nj=3)
    assert run(bad) == 1
    assert "--json-nj 3, but stage 2 recorded 2 train json files" in _log(bad)
