"""The demo's configs load, agree with each other and build the intended small model."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from e2e_asr.model import build_model
from e2e_asr.train.config import load_train_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_demo_fbank_differs_from_fbank_only_in_bins() -> None:
    demo = yaml.safe_load((CONF / "demo_fbank.yaml").read_text())
    full = yaml.safe_load((CONF / "fbank.yaml").read_text())
    assert demo.pop("num_mel_bins") == 40 and full.pop("num_mel_bins") == 80
    assert demo == full


def test_base_and_finetune_configs_describe_one_model() -> None:
    base = load_train_config(CONF / "demo_base.yaml")
    ft = load_train_config(CONF / "demo_finetune.yaml")
    arch = ("encoder_", "decoder_attention", "decoder_linear", "decoder_num", "cnn_", "idim")
    for key, value in base["model_config"].items():
        if key.startswith(arch) and "dropout" not in key:
            assert ft["model_config"][key] == value, key
    assert base["model_config"]["idim"] == 40  # conf/demo_fbank.yaml
    assert base["criterion_config"]["rate"] < 1  # a trained decoder: rescoring works
    assert ft["train_config"]["cmvn"] == "base" and ft["train_config"]["noam_restart"]
    assert ft["opti_config"]["lr"] < base["opti_config"]["lr"]


def test_demo_base_model_is_small_and_runs() -> None:
    cfg = load_train_config(CONF / "demo_base.yaml")
    torch.manual_seed(0)
    model = build_model(cfg["model_config"], cfg["criterion_config"])
    n_params = sum(p.numel() for p in model.parameters())
    assert 2e6 < n_params < 5e6, n_params
    feats = torch.randn(2, 300, 40)
    lens = torch.tensor([300, 200])
    ys = torch.tensor([[5, 6, 7], [8, 9, -1]])
    out = model(feats, lens, ys)
    assert torch.isfinite(out["loss"])
    _, enc_lens = model.encode(feats, lens)
    assert int(enc_lens[0]) == 49  # 6x subsampling: ((300 - 1) // 2 - 2) // 3
