"""A tiny model checkpoint and its export, built once per test session (export takes seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from model_fixtures import tiny_model_config

from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import save_checkpoint

MC = tiny_model_config(
    odim=22,
    encoder_attention_dim=32,
    encoder_linear_units=64,
    decoder_attention_dim=32,
    decoder_linear_units=64,
)
UNITS = ["<blank>", "<unk>", *"一二三四五六七八九十百千万亿零abcd", "<sos/eos>"]
_CACHE: dict[str, Path] = {}


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(MC, {"rate": 0.3})
    model.set_cmvn(torch.randn(20) * 2 + 8, torch.rand(20) + 0.3)
    with torch.no_grad():
        # a random model is nearly uniform; sharper outputs make the search tests meaningful
        # (ties are unlikely) and int8 agreement measurable
        model.ctc.ctc_lo.weight.mul_(8.0)
        model.decoder.output_layer.weight.mul_(8.0)
    return model.eval()


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    model = tiny_model(seed)
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "config": {
                "model_config": MC,
                "criterion_config": {"rate": 0.3},
                "decode_config": {"beam": 4, "ctc_beam": 6, "lm_rate": 0, "ctc_weight": 0.3},
            },
            "units": UNITS,
            "feature_config": {"type": "fbank", "num_mel_bins": 20, "dither": 1.0},
            "epoch": 1,
            "step": 1,
        },
    )
    return path


def exported(root: Path) -> Path:
    """``root/export`` of the tiny model (cached for the session)."""
    if "export" not in _CACHE:
        from e2e_asr.export.package import export_package

        root.mkdir(parents=True, exist_ok=True)
        ckpt = write_checkpoint(root / "checkpoint.1")
        export_package(ckpt, root / "export", log=lambda m: None)
        _CACHE["export"] = root / "export"
    return _CACHE["export"]


def write_wavs(d: Path, durations=(1.3, 2.1)) -> list[Path]:
    rng = np.random.default_rng(1)
    out = []
    for i, dur in enumerate(durations):
        p = d / f"utt{i}.wav"
        t = np.arange(int(16000 * dur)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        sf.write(p, x.astype(np.float32), 16000, subtype="PCM_16")
        out.append(p)
    return out
