"""The training run end to end on a tiny model: learning, fine-tuning, freeze, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_train_support import UNITS, make_base_model, make_data_dir, write_config

from e2e_asr.model.checkpoint import load_checkpoint
from e2e_asr.train.data import source_rows
from e2e_asr.train.scheduler import NoamSchedule
from e2e_asr.train.trainer import TrainArgs, run


def _args(tmp: Path, data: Path, exp: str = "exp", **kw) -> TrainArgs:
    # CPU pinned: the suite runs unchanged on a GPU host (bit-exact checks are CPU guarantees)
    base = dict(config=tmp / "conf.yaml", json_dir=data, exp_dir=tmp / exp, json_nj=2, device="cpu")
    base.update(kw)
    return TrainArgs(**base)


def _log(exp: Path) -> str:
    return (exp / "train.log").read_text(encoding="utf-8")


def test_loss_falls_from_scratch_and_outputs_exist(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=8, n_dev=2)
    write_config(tmp_path / "conf.yaml", {"opti_config": {"factor": 1.0, "warm_step": 8}})
    args = _args(
        tmp_path,
        data,
        epochs=6,
        units=data / "units.txt",
        cmvn=data / "cmvn.ark",
        feature_config=data / "feature.yaml",
    )
    assert run(args) == 0, _log(args.exp_dir)
    exp = args.exp_dir
    records = [json.loads(x) for x in (exp / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    for key in ("dev_loss", "dev_acc", "dev_cer", "train_loss", "lr"):
        assert key in records[0]
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"]
    # dev loss overfits on 8 utterances (the decoder memorises them); CTC CER still falls
    assert records[-1]["dev_cer"] < records[0]["dev_cer"]
    assert all((exp / f"checkpoint.{n}").is_file() for n in range(1, 7))
    assert (exp / "train_curves.png").stat().st_size > 1000
    assert any((exp / "tensorboard").iterdir())
    payload = load_checkpoint(exp / "checkpoint.6")
    for key in (
        "model",
        "config",
        "units",
        "feature_config",
        "epoch",
        "step",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "train_state",
        "validation",
    ):
        assert key in payload
    assert payload["units"] == UNITS and payload["epoch"] == 6 and payload["step"] == 24
    log = _log(exp)
    assert "jconfig.batch_size: 2" in log  # config printed at start
    assert "epoch [1/6] step [1/4]" in log and "frames/s" in log and "eta" in log


def test_finetune_continues_epochs_and_lr_from_base(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=8, n_dev=2)
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data, epoch=3, step=10)
    write_config(tmp_path / "conf.yaml", {"train_config": {"accum_grad": 2}})
    args = _args(tmp_path, data, epochs=4, base_model=base)
    assert run(args) == 0, _log(args.exp_dir)
    assert not (args.exp_dir / "checkpoint.1").exists()
    payload = load_checkpoint(args.exp_dir / "checkpoint.4")
    assert payload["epoch"] == 4
    assert payload["step"] == 12  # 4 batches / accum_grad 2 = 2 updates after the base's 10
    assert payload["scheduler"]["step"] == 12
    noam = NoamSchedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0), 5.0, 20, 32)
    assert payload["optimizer"]["param_groups"][0]["lr"] == pytest.approx(noam.lr_at(13))
    # restart on request: the schedule starts from 0, the update count still continues
    write_config(tmp_path / "conf.yaml", {"train_config": {"noam_restart": True}})
    args = _args(tmp_path, data, "exp_restart", epochs=4, base_model=base)
    assert run(args) == 0
    payload = load_checkpoint(args.exp_dir / "checkpoint.4")
    assert payload["scheduler"]["step"] == 4 and payload["step"] == 14
    # re-running a finished stage is a no-op that succeeds
    mtime = (args.exp_dir / "checkpoint.4").stat().st_mtime_ns
    assert run(args) == 0
    assert "nothing to do" in _log(args.exp_dir)
    assert (args.exp_dir / "checkpoint.4").stat().st_mtime_ns == mtime


def test_amp_bf16_on_cpu_trains(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data)
    write_config(tmp_path / "conf.yaml", {"train_config": {"amp": True, "keep_last": 1}})
    args = _args(tmp_path, data, epochs=5, base_model=base)
    assert run(args) == 0, _log(args.exp_dir)
    payload = load_checkpoint(args.exp_dir / "checkpoint.5")
    assert payload["step"] == 14
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())
    assert sorted(p.name for p in args.exp_dir.glob("checkpoint.*")) == ["checkpoint.5"]


def test_freeze_really_freezes_and_lr_scales_make_groups(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data)
    write_config(
        tmp_path / "conf.yaml",
        {
            "train_config": {
                "freeze": ["encoder.embed", "encoder.encoders.0"],
                "lr_scales": {"decoder": 0.5},
                "dev_cer": False,
            }
        },
    )
    args = _args(tmp_path, data, epochs=4, base_model=base)
    assert run(args) == 0, _log(args.exp_dir)
    before = load_checkpoint(base)["model"]
    after = load_checkpoint(args.exp_dir / "checkpoint.4")
    frozen = [k for k in before if k.startswith(("encoder.embed.", "encoder.encoders.0."))]
    moved = [k for k in before if k.startswith(("encoder.encoders.1.", "decoder.", "ctc."))]
    assert frozen and moved
    for k in frozen:
        assert torch.equal(before[k], after["model"][k]), k
    assert any(not torch.equal(before[k], after["model"][k]) for k in moved)
    groups = after["optimizer"]["param_groups"]
    assert sorted(g["lr_scale"] for g in groups) == [0.5, 1.0]
    names = [n for g in groups for n in g["param_names"]]
    assert not any(n.startswith("encoder.encoders.0.") for n in names)
    half = next(g for g in groups if g["lr_scale"] == 0.5)
    full = next(g for g in groups if g["lr_scale"] == 1.0)
    assert all(n.startswith("decoder.") for n in half["param_names"])
    assert half["lr"] == pytest.approx(0.5 * full["lr"])


def test_freeze_prefix_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data)
    write_config(tmp_path / "conf.yaml", {"train_config": {"freeze": ["encoder.layers"]}})
    args = _args(tmp_path, data, epochs=4, base_model=base)
    assert run(args) == 1
    assert "encoder.layers" in _log(args.exp_dir)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("dim", "idim 10"),
        ("units", "units.txt"),
        ("feature_type", "feature.yaml"),
        ("no_cmvn", "no CMVN"),
        ("epochs", "nothing to train"),
    ],
)
def test_mismatch_fails_before_training(tmp_path: Path, case: str, needle: str) -> None:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    path = tmp_path / "base" / "checkpoint.3"
    epochs = 4
    if case == "dim":
        make_base_model(path, data, changes={"model_config": {"idim": 10}}, cmvn=False)
    elif case == "units":
        make_base_model(
            path, data, units=["<blank>", "<unk>", "x", "y", "z", "w", "v", "<sos/eos>"]
        )
    elif case == "feature_type":
        make_base_model(
            path, data, features={"type": "fbank", "num_mel_bins": 8, "snip_edges": False}
        )
    elif case == "no_cmvn":
        make_base_model(path, data, cmvn=False)
    else:
        make_base_model(path, data)
        epochs = 3
    write_config(tmp_path / "conf.yaml")
    args = _args(tmp_path, data, epochs=epochs, base_model=path)
    assert run(args) == 1
    log = _log(args.exp_dir)
    assert needle in log, log[-2000:]
    assert "update 1" not in log and not (args.exp_dir / "checkpoint.4").exists()


def test_json_units_extending_the_base_grow_the_model(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    grown = UNITS[:-1] + ["f", "<sos/eos>"]
    (data / "units.txt").write_text(
        "".join(f"{u} {i}\n" for i, u in enumerate(grown)), encoding="utf-8"
    )
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data)
    write_config(tmp_path / "conf.yaml")
    args = _args(tmp_path, data, epochs=4, base_model=base)
    assert run(args) == 0, _log(args.exp_dir)[-2000:]
    payload = load_checkpoint(args.exp_dir / "checkpoint.4")
    assert payload["units"] == grown
    assert payload["model"]["ctc.ctc_lo.weight"].shape[0] == len(grown)


def test_source_mixing_draws_a_seeded_share_each_epoch(tmp_path: Path) -> None:
    sizes, kept = [7, 7, 6], [4, 3, 3]  # source shards; target shards in the epoch's order

    def drawn(ratio: float, epoch: int) -> list[list[tuple[int, int]]]:
        return [
            [(s, int(r)) for s, rows in source_rows(sizes, kept, ratio, 1, epoch, j) for r in rows]
            for j in range(len(kept))
        ]

    a = drawn(0.5, 2)
    flat = [x for part in a for x in part]
    # round(0.5 x 10) without replacement, each target shard its share, from <= 2 source shards
    assert len(flat) == 5 == len(set(flat)) and [len(p) for p in a] == [2, 1, 2]
    assert all(len({s for s, _ in part}) <= 2 for part in a)
    assert all(0 <= r < sizes[s] for s, r in flat)
    assert a == drawn(0.5, 2) and a != drawn(0.5, 3)
    assert drawn(0.0, 2) == [[], [], []]
    everything = [x for part in drawn(3.0, 2) for x in part]  # more than exists: all, once
    assert sorted(everything) == [(s, r) for s in range(3) for r in range(sizes[s])]
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    source = make_data_dir(tmp_path / "source", n_train=8, n_dev=1, json_nj=1, seed=5, prefix="src")
    base = make_base_model(tmp_path / "base" / "checkpoint.3", data)
    # worker processes load the features here, as in real runs
    write_config(tmp_path / "conf.yaml", {"train_config": {"num_workers": 2}})
    args = _args(tmp_path, data, epochs=4, base_model=base, mix_json_dir=source, mix_ratio=1.5)
    assert run(args) == 0, _log(args.exp_dir)
    assert "epoch 4: 4 target + 6 source utterances" in _log(args.exp_dir)
    # batches are made per target shard: 2 target + 3 source utterances in batches of 2 ->
    # 3 batches per shard, 2 shards -> 6 updates after the base's 10
    assert load_checkpoint(args.exp_dir / "checkpoint.4")["step"] == 16


def test_bad_config_key_stops_the_run_naming_it(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "data", n_train=4, n_dev=1)
    cfg = yaml.safe_load(write_config(tmp_path / "conf.yaml").read_text())
    cfg["train_config"]["accum_grads"] = 2
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(cfg))
    args = _args(
        tmp_path,
        data,
        epochs=1,
        units=data / "units.txt",
        cmvn=data / "cmvn.ark",
        feature_config=data / "feature.yaml",
    )
    assert run(args) == 1
    assert "accum_grads" in _log(args.exp_dir)
