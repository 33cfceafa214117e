"""Synthetic data and tiny models for the training tests (helpers, plus a check of them).

The data is learnable on purpose: every token paints its own pattern over 6 frames, so a
2-block model's loss falls within a few dozen updates on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kaldiio
import numpy as np
import torch
import yaml

from e2e_asr.data.cmvn import write_cmvn
from e2e_asr.data.espnet_json import read_utts, write_json
from e2e_asr.data.units import write_units
from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import save_checkpoint
from e2e_asr.train.config import load_train_config

DIM = 8
UNITS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "<sos/eos>"]
FEATURES = {"type": "fbank", "num_mel_bins": DIM, "dither": 0.0}

TINY_CONFIG: dict[str, Any] = {
    "set_config": {
        "data_type": "json",
        "load": False,
        "jconfig": {
            "batch_size": 2,
            "max_length_in": 512,
            "max_length_out": 150,
            "shortest_first": True,
            "count": "seq",
            "clean_data": True,
            "ilen_min": 17,
            "ilen_max": 2000,
            "olen_max": 100,
        },
        "trans_config": [],
    },
    "opti_config": {
        "name": "eteh.models.pytorch_backend.optimizer.optimizer:Noam",
        "factor": 5.0,
        "warm_step": 20,
        "model_size": 32,
    },
    "criterion_config": {
        "name": "eteh.models.pytorch_backend.criterion.loss:E2E_Loss",
        "size": len(UNITS),
        "padding_idx": -1,
        "smoothing": 0.1,
        "rate": 0.3,
    },
    "model_config": {
        "name": "eteh.models.pytorch_backend.model.e2e:E2E_Transformer_CTC",
        "idim": DIM,
        "odim": len(UNITS),
        "encoder_attention_dim": 32,
        "encoder_attention_heads": 2,
        "encoder_linear_units": 64,
        "encoder_num_blocks": 2,
        "encoder_input_layer": "conv2d",
        "encoder_dropout_rate": 0.0,
        "decoder_attention_dim": 32,
        "decoder_attention_heads": 2,
        "decoder_linear_units": 64,
        "decoder_num_block": 1,
        "decoder_dropout_rate": 0.0,
        "ctc_dropout": 0.0,
    },
    "train_config": {
        "char_num": len(UNITS),
        "accum_grad": 1,
        "log_interval": 1,
        "snapshot_interval": 0,
        "num_workers": 0,
        "seed": 7,
    },
    "decode_config": {"beam": 2, "ctc_beam": 2, "ctc_weight": 0.3, "char_num": len(UNITS)},
}


def write_config(path: Path, changes: dict[str, dict[str, Any]] | None = None) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(TINY_CONFIG))
    for section, values in (changes or {}).items():
        target = cfg["set_config"] if section in ("jconfig",) else cfg
        if section == "trans_config":
            cfg["set_config"]["trans_config"] = values
            continue
        target.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _utterance(rng: np.random.Generator, tokens: list[int], same_len: int | None) -> np.ndarray:
    frames = []
    for t in tokens:
        pattern = np.zeros(DIM, dtype=np.float32)
        pattern[t % DIM] = 3.0
        pattern[(t * 3) % DIM] += 1.5
        frames.append(np.repeat(pattern[None], 6, axis=0))
    feats = np.concatenate(frames)
    pad = (same_len - feats.shape[0]) if same_len else int(rng.integers(2, 8))
    feats = np.concatenate(
        [np.zeros((2, DIM), np.float32), feats, np.zeros((pad, DIM), np.float32)]
    )
    return (feats + 0.1 * rng.standard_normal(feats.shape)).astype(np.float32)


def make_data_dir(
    root: Path,
    n_train: int = 8,
    n_dev: int = 2,
    json_nj: int = 2,
    seed: int = 0,
    same_len: bool = False,
    prefix: str = "utt",
) -> Path:
    """A stage-2-like directory: train.{1..nj}.json, dev.json, units.txt, cmvn.ark,
    feature.yaml, with features in a kaldiio ark."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mats: dict[str, np.ndarray] = {}
    toks: dict[str, list[int]] = {}
    for i in range(n_train + n_dev):
        key = f"{prefix}{i:03d}"
        tokens = [int(t) for t in rng.integers(2, len(UNITS) - 1, size=5)]
        mats[key] = _utterance(rng, tokens, 40 if same_len else None)
        toks[key] = tokens
    ark, scp = root / "feats.ark", root / "feats.scp"
    kaldiio.save_ark(str(ark), mats, scp=str(scp))
    offsets = dict(line.split(None, 1) for line in scp.read_text().splitlines())
    entries = {}
    for key, mat in mats.items():
        entries[key] = {
            "input": [{"feat": offsets[key].strip(), "name": "input1", "shape": list(mat.shape)}],
            "output": [
                {
                    "name": "target1",
                    "shape": [len(toks[key]), len(UNITS)],
                    "text": "".join(UNITS[t] for t in toks[key]),
                    "token": " ".join(UNITS[t] for t in toks[key]),
                    "tokenid": " ".join(str(t) for t in toks[key]),
                }
            ],
            "utt2spk": "spk1",
        }
    keys = sorted(entries)
    train, dev = keys[:n_train], keys[n_train:]
    for j in range(json_nj):
        write_json(root / f"train.{j + 1}.json", {k: entries[k] for k in train[j::json_nj]})
    write_json(root / "dev.json", {k: entries[k] for k in dev})
    write_units(root / "units.txt", UNITS)
    all_feats = np.concatenate(list(mats.values())).astype(np.float64)
    stats = np.zeros((2, DIM + 1))
    stats[0, :DIM] = all_feats.sum(0)
    stats[1, :DIM] = (all_feats**2).sum(0)
    stats[0, DIM] = all_feats.shape[0]
    write_cmvn(root / "cmvn.ark", stats)
    (root / "feature.yaml").write_text(yaml.safe_dump(FEATURES), encoding="utf-8")
    return root


def make_base_model(
    path: Path,
    data_dir: Path,
    epoch: int = 3,
    step: int = 10,
    changes: dict[str, dict[str, Any]] | None = None,
    units: list[str] | None = None,
    cmvn: bool = True,
    features: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint.N as a previous training run would leave it (random tiny weights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    units = units or UNITS
    changes = dict(changes or {})
    mc = {**changes.pop("model_config", {}), "odim": len(units)}
    changes["model_config"] = mc
    changes.setdefault("criterion_config", {})["size"] = len(units)
    changes.setdefault("train_config", {})["char_num"] = len(units)
    changes.setdefault("decode_config", {})["char_num"] = len(units)
    cfg = load_train_config(write_config(path.parent / "base_config.yaml", changes))
    torch.manual_seed(123)
    model = build_model(cfg["model_config"], cfg["criterion_config"])
    from e2e_asr.data.cmvn import read_cmvn

    if cmvn:
        mean, istd = read_cmvn(data_dir / "cmvn.ark")
        model.set_cmvn(torch.from_numpy(mean[: model.idim]), torch.from_numpy(istd[: model.idim]))
    from e2e_asr.data.features import FeatureConfig

    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "config": cfg,
            "units": units,
            "feature_config": FeatureConfig.from_dict(features or FEATURES).to_dict(),
            "epoch": epoch,
            "step": step,
        },
    )
    return path


def test_synthetic_data_dir_is_readable(tmp_path: Path) -> None:
    d = make_data_dir(tmp_path / "data", n_train=4, n_dev=1, json_nj=2)
    utts = {**read_utts(d / "train.1.json"), **read_utts(d / "train.2.json")}
    assert len(utts) == 4
    info = next(iter(utts.values()))
    mat = kaldiio.load_mat(info["input"][0]["feat"])
    assert list(mat.shape) == info["input"][0]["shape"]
    assert mat.shape[1] == DIM
