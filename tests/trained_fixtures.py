"""A tiny model that has really learnt something: spoken Chinese digits (espeak-ng), trained
with CTC for a few seconds, exported with the real export (stage 5). Built once per session.

Tests that compare two runtimes on it (ONNX Runtime vs sherpa-onnx) need hypotheses that come
from real speech through a peaky CTC model, not from a random network whose near-ties would
flip on rounding noise.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from e2e_asr.data.cmvn import CmvnStats, stats_to_mean_istd
from e2e_asr.data.features import FeatureConfig, compute_features
from e2e_asr.data.units import Tokenizer
from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import save_checkpoint

DIGITS = {
    "一": "yi1",
    "二": "er4",
    "三": "san1",
    "四": "si4",
    "五": "wu3",
    "六": "liu4",
    "七": "qi1",
    "八": "ba1",
    "九": "jiu3",
    "十": "shi2",
}
UNITS = ["<blank>", "<unk>", *DIGITS, "<sos/eos>"]
# the recipe's Kaldi fbank (conf/fbank.yaml), deterministic
FEATURES = FeatureConfig(type="fbank", num_mel_bins=80, dither=0.0)
MODEL_CONFIG = dict(
    idim=80,
    odim=len(UNITS),
    encoder_attention_dim=48,
    encoder_attention_heads=2,
    encoder_linear_units=96,
    encoder_num_blocks=2,
    encoder_input_layer="conv2d",
    decoder_attention_dim=48,
    decoder_attention_heads=2,
    decoder_linear_units=96,
    decoder_num_block=1,
)
VOICES = ("m1", "f2")
LR, WARMUP = 3e-3, 30  # Adam, linear warmup over WARMUP updates, then constant
_CACHE: dict[str, object] = {}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(pinyin: str, voice: str = "m1", speed: int = 170) -> np.ndarray:
    """espeak-ng's cmn-latn-pinyin voice, 16 kHz float32 (as local/demo/make_corpus.py)."""
    out = subprocess.run(
        ["espeak-ng", "-v", f"cmn-latn-pinyin+{voice}", "-s", str(speed), "--stdout", pinyin],
        capture_output=True,
        check=True,
    ).stdout
    audio, rate = sf.read(io.BytesIO(out), dtype="float32")
    return resample_poly(audio, 16000, rate).astype(np.float32)


@dataclass
class DigitsModel:
    export_dir: Path
    checkpoint: Path
    test: list[tuple[str, np.ndarray]]  # (key, samples)
    refs: dict[str, str]


def _utterances(n: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    rng = random.Random(seed)
    chars = list(DIGITS)
    out = []
    for i in range(n):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(2, 5)))
        voice = VOICES[i % len(VOICES)]
        audio = speak(" ".join(DIGITS[c] for c in text), voice, rng.randint(150, 190))
        out.append((f"{seed}_{i:03d}", text, audio))
    return out


def _train(feats: list[np.ndarray], targets: list[list[int]], steps: int, seed: int):
    torch.manual_seed(seed)
    # CTC only (rate 1): the decoder is not needed to compare CTC decoders, and is skipped
    model = build_model(MODEL_CONFIG, {"rate": 1.0})
    stats = CmvnStats(80)
    for f in feats:
        stats.add(f)
    mean, istd = stats_to_mean_istd(stats.stats)
    model.set_cmvn(torch.as_tensor(mean), torch.as_tensor(istd))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP))
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = rng.choice(len(feats), size=8, replace=False)
        lens = torch.tensor([feats[i].shape[0] for i in idx])
        x = torch.zeros(len(idx), int(lens.max()), 80)
        ys = torch.full((len(idx), max(len(targets[i]) for i in idx)), -1, dtype=torch.long)
        for j, i in enumerate(idx):
            x[j, : lens[j]] = torch.from_numpy(feats[i])
            ys[j, : len(targets[i])] = torch.tensor(targets[i])
        loss = model(x, lens, ys)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
    return model.eval()


def digits_model(root: Path, steps: int = 200) -> DigitsModel:
    """Train (once per session) and export the digits model under ``root``."""
    if "digits" in _CACHE:
        return _CACHE["digits"]  # type: ignore[return-value]
    from e2e_asr.export.package import export_package

    tok = Tokenizer(UNITS)
    train = _utterances(48, seed=1)
    test = _utterances(16, seed=2)
    feats = [compute_features(a, FEATURES) for _, _, a in train]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~20 s of CPU on one thread; more only contend on 2 cores
    try:
        model = _train(feats, [tok.encode(t) for _, t, _ in train], steps, seed=0)
    finally:
        torch.set_num_threads(threads)
    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "checkpoint.1"
    save_checkpoint(
        ckpt,
        {
            "model": model.state_dict(),
            "config": {
                "model_config": MODEL_CONFIG,
                "criterion_config": {"rate": 1.0},
                "decode_config": {"mode": "ctc_greedy", "beam": 4, "ctc_beam": 6},
                # the schedule _train used (opti_config.lr: auto of a fine-tune derives from it)
                "opti_config": {
                    "name": "warmup_decay",
                    "lr": LR,
                    "warm_step": WARMUP,
                    "decay": "constant",
                    "decay_steps": 0,
                    "final_lr": 0.0,
                },
            },
            "units": UNITS,
            # trained with Kaldi's dither 1.0 in the recipe; decoding always uses 0
            "feature_config": {**FEATURES.to_dict(), "dither": 1.0},
            "epoch": 1,
            "step": steps,
        },
    )
    export_package(ckpt, root / "export", log=lambda m: None)
    result = DigitsModel(
        export_dir=root / "export",
        checkpoint=ckpt,
        test=[(k, a) for k, _, a in test],
        refs={k: t for k, t, _ in test},
    )
    _CACHE["digits"] = result
    return result
