"""LoRA through the whole path: a training run (stage 3) whose checkpoints hold merged plain
weights plus the adapters, exact resume of a LoRA run, averaging and export of its
checkpoints (ONNX of the merged weights = the adapter model)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.export.average import average_checkpoints
from e2e_asr.export.package import export_package
from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import load_checkpoint, load_model
from e2e_asr.train import lora
from e2e_asr.train.trainer import TrainArgs, run

LORA = {"rank": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["linear_q", "linear_v", "w_1"]}
CHANGES = {
    "train_config": {"accum_grad": 2, "snapshot_interval": 1, "dev_cer": False, "lora": LORA},
    "model_config": {"encoder_dropout_rate": 0.1, "decoder_dropout_rate": 0.1},
    "opti_config": {"factor": 20.0},
    "trans_config": [{"type": "time_mask", "T": 5, "n_mask": 1, "replace_with_zero": False}],
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict:
    tmp = tmp_path_factory.mktemp("lora_run")
    data = make_data_dir(tmp / "data", n_train=12, n_dev=2)
    base = make_base_model(tmp / "base" / "checkpoint.3", data, epoch=3, step=10)
    conf = write_config(tmp / "lora.yaml", CHANGES)

    def args(name: str, **kw) -> TrainArgs:
        return TrainArgs(
            config=conf,
            json_dir=data,
            exp_dir=tmp / name,
            json_nj=2,
            epochs=5,
            base_model=base,
            device="cpu",
            **kw,
        )

    assert run(args("ref")) == 0
    # the same run stopped mid-epoch, then resumed: 6 batches per epoch and accum_grad 2 make
    # epoch 4 = updates 11..13 and epoch 5 = 14..16; 4 updates stop after batch 2 of epoch 5
    assert run(args("resumed", max_steps=4)) == 0
    snap = load_checkpoint(tmp / "resumed" / "snapshot")
    assert snap["step"] == 14 and snap["train_state"]["batch"] == 2
    assert not snap["train_state"]["done"]
    assert "lora" in snap
    assert run(args("resumed")) == 0
    return {"tmp": tmp, "base": base, "ref": tmp / "ref", "resumed": tmp / "resumed"}


def _wrapped(payload: dict) -> torch.nn.Module:
    """The adapter model a payload describes (plain model + LoRA restored from ``lora``)."""
    cfg = payload["config"]
    model = build_model(cfg["model_config"], cfg["criterion_config"])
    lora.apply_lora(model, cfg["train_config"]["lora"])
    lora.load_lora_payload(model, payload)
    return model.eval()


def _feats(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 50, 8, generator=g), torch.tensor([50, 37])


def test_lora_run_trains_only_adapters_and_saves_merged_weights(runs: dict) -> None:
    base = load_checkpoint(runs["base"])["model"]
    got = load_checkpoint(runs["ref"] / "checkpoint.5")
    entry = got["lora"]
    assert set(got["model"]) == set(base)  # plain ESPnet names, nothing added
    # 2 encoder blocks x (q, v, w_1), 1 decoder block x (self q, v, source q, v, w_1)
    assert len(entry["modules"]) == 2 * 3 + 5
    for key, value in base.items():
        adapted = key in entry["base"]
        assert torch.equal(got["model"][key], value) != adapted, key
        if adapted:  # the unmerged weight kept for resuming is the base model's
            assert torch.equal(entry["base"][key], value), key
    # only the adapters had optimizer state
    n_adapter = sum(t.numel() for t in entry["adapters"].values())
    moments = [s["exp_avg"] for s in got["optimizer"]["state"].values()]
    assert sum(m.numel() for m in moments) == n_adapter
    log = (runs["ref"] / "train.log").read_text()
    assert f"trainable parameters: {n_adapter} of" in log
    # the plain checkpoint (what decoding and export load) = the adapter model
    plain, _ = load_model(runs["ref"] / "checkpoint.5")
    wrapped = _wrapped(got)
    feats, lens = _feats()
    with torch.no_grad():
        a = plain.ctc_log_probs(plain.encode(feats, lens)[0])
        b = wrapped.ctc_log_probs(wrapped.encode(feats, lens)[0])
    assert (a - b).abs().max() < 1e-5


def test_lora_run_stopped_mid_epoch_resumes_exactly(runs: dict) -> None:
    log = (runs["resumed"] / "train.log").read_text()
    assert "resuming from" in log and "update 14, epoch 5, batch 2" in log
    ref = load_checkpoint(runs["ref"] / "checkpoint.5")
    got = load_checkpoint(runs["resumed"] / "checkpoint.5")
    assert got["step"] == ref["step"] == 16
    for key in ref["model"]:
        assert torch.equal(ref["model"][key], got["model"][key]), key
    for part in ("adapters", "base"):
        for key, value in ref["lora"][part].items():
            assert torch.equal(value, got["lora"][part][key]), key
    for sa, sb in zip(
        ref["optimizer"]["state"].values(), got["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_averaging_averages_merged_models_and_export_serves_them(runs: dict, tmp_path) -> None:
    exp = runs["ref"]
    out = tmp_path / "model.avg"
    average_checkpoints(exp, out, start=4, end=6, warn=lambda m: None)
    avg = load_checkpoint(out)
    assert "lora" not in avg and "optimizer" not in avg
    a, b = (load_checkpoint(exp / f"checkpoint.{n}") for n in (4, 5))
    for key, value in avg["model"].items():
        if value.is_floating_point():
            want = ((a["model"][key].double() + b["model"][key].double()) / 2).float()
            assert torch.equal(value, want), key
    # the average of the merged models is not what averaging the adapters would give
    key = next(iter(a["lora"]["base"]))
    m = key.rsplit(".", 1)[0]
    s = lora.scaling(a["config"]["train_config"]["lora"])
    mean = {
        k: (a["lora"]["adapters"][k] + b["lora"]["adapters"][k]) / 2 for k in a["lora"]["adapters"]
    }
    of_means = a["lora"]["base"][key] + s * mean[f"{m}.lora_B.weight"] @ mean[f"{m}.lora_A.weight"]
    assert (of_means - avg["model"][key]).abs().max() > 1e-6

    # export of a LoRA checkpoint: its ONNX encoder gives the adapter model's CTC outputs
    pkg = tmp_path / "export"
    export_package(exp / "checkpoint.5", pkg, quantize=False, log=lambda m: None)
    assert "lora" not in load_checkpoint(pkg / "model.pt")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(pkg / "encoder.onnx"), options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in sess.get_inputs()]
    feats, lens = _feats(1)
    outs = dict(
        zip(
            [o.name for o in sess.get_outputs()],
            sess.run(None, dict(zip(names, (feats.numpy(), lens.numpy()), strict=True))),
            strict=True,
        )
    )
    wrapped = _wrapped(b)
    with torch.no_grad():
        want = wrapped.ctc_log_probs(wrapped.encode(feats, lens)[0]).numpy()
    got = next(v for k, v in outs.items() if "ctc" in k or "log_prob" in k)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
