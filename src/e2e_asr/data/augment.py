"""Waveform augmentation as extra data-dir copies (Kaldi style, before features).

Speed perturbation makes ``sp<factor>-<utt>`` copies; then ``copies`` augmented versions
``aug<k>-<key>`` of every original and speed copy, each effect applied with its own
probability. Section and option names follow PPASR's augmentation config (noise, reverb,
speed, volume, shift, resample). Random choices are seeded per key, so a re-run produces the
same files.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from e2e_asr.data.audio import AUDIO_EXTENSIONS, load_audio, to_mono_rate
from e2e_asr.data.datadir import DataDirWriter, Segment, Utterance, iter_data_dir
from e2e_asr.data.io import atomic_open, atomic_write_bytes
from e2e_asr.data.keystore import KeyStore
from e2e_asr.data.schema import Fail, parse_section


@dataclass
class SpeedConfig:
    prob: float = 1.0  # offline copies: every utterance gets them (PPASR's 0.5 is per batch)
    factors: list[float] = field(default_factory=lambda: [0.9, 1.1])


@dataclass
class NoiseConfig:
    prob: float = 0.5
    noise_dir: str = ""
    min_snr_dB: float = 10.0  # noqa: N815 (PPASR's names)
    max_snr_dB: float = 50.0  # noqa: N815


@dataclass
class ReverbConfig:
    prob: float = 0.2
    reverb_dir: str = ""  # empty: generated exponential-decay room responses
    min_t60: float = 0.2
    max_t60: float = 0.8


@dataclass
class VolumeConfig:
    prob: float = 0.5
    min_gain_dBFS: float = -15.0  # noqa: N815
    max_gain_dBFS: float = 15.0  # noqa: N815


@dataclass
class ShiftConfig:
    prob: float = 0.5
    min_shift_ms: float = -5.0
    max_shift_ms: float = 5.0


@dataclass
class ResampleConfig:
    prob: float = 0.0
    new_sample_rate: list[int] = field(default_factory=lambda: [8000, 16000, 24000])


_SECTIONS = {
    "speed": SpeedConfig,
    "noise": NoiseConfig,
    "reverb": ReverbConfig,
    "volume": VolumeConfig,
    "shift": ShiftConfig,
    "resample": ResampleConfig,
}


@dataclass
class AugmentConfig:
    sample_rate: int = 16000
    copies: int = 1  # augmented copies (aug1-, aug2-, …) per original and speed copy
    seed: int = 1234
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)

    def check(self, fail: Fail) -> None:
        if any(f <= 0 or f == 1.0 for f in self.speed.factors):
            fail("speed.factors", "must be positive and not 1.0 (the original)")
        for name in _SECTIONS:
            p = getattr(self, name).prob
            if not 0.0 <= p <= 1.0:
                fail(f"{name}.prob", f"must be in [0, 1], got {p}")

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "augment config") -> AugmentConfig:
        """Read and check an augmentation config (``parse_section``); errors name the key."""
        return parse_section(cls, d, "", where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> AugmentConfig:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh) or {}, str(path))

    def to_dict(self) -> dict:
        return asdict(self)


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def speed_perturb(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Kaldi/sox ``speed``: tempo and pitch change together (lhotse's resampler)."""
    from lhotse.augmentation import Speed

    return Speed(factor=factor)(x[None, :], sample_rate)[0].astype(np.float32)


def _list_audio(d: str) -> list[Path]:
    if not d:
        return []
    root = Path(d)
    if not root.is_dir():
        raise FileNotFoundError(f"augmentation folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)


def _synthetic_rir(rng: np.random.Generator, sr: int, t60: float) -> np.ndarray:
    """Exponentially decaying noise tail after a direct path: a simple diffuse room."""
    n = int(sr * t60)
    t = np.arange(n) / sr
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / t60) * 0.3
    rir[0] = 1.0
    return rir.astype(np.float32)


class Augmenter:
    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.noises = _list_audio(cfg.noise.noise_dir)
        self.rirs = _list_audio(cfg.reverb.reverb_dir)
        self.applied: Counter = Counter()

    def _noise(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = load_audio(str(self.noises[rng.integers(len(self.noises))]), self.cfg.sample_rate)
        if len(noise) < len(x):
            noise = np.tile(noise, int(np.ceil(len(x) / max(len(noise), 1))))
        start = rng.integers(len(noise) - len(x) + 1)
        noise = noise[start : start + len(x)]
        snr = rng.uniform(self.cfg.noise.min_snr_dB, self.cfg.noise.max_snr_dB)
        px, pn = np.mean(x**2) + 1e-12, np.mean(noise**2) + 1e-12
        return x + noise * np.sqrt(px / (pn * 10 ** (snr / 10)))

    def _reverb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.signal import fftconvolve

        sr = self.cfg.sample_rate
        if self.rirs:
            rir = load_audio(str(self.rirs[rng.integers(len(self.rirs))]), sr)
        else:
            rir = _synthetic_rir(
                rng, sr, rng.uniform(self.cfg.reverb.min_t60, self.cfg.reverb.max_t60)
            )
        peak = int(np.argmax(np.abs(rir)))  # align the direct path: output keeps its timing
        y = fftconvolve(x, rir[peak:])[: len(x)]
        return y * np.sqrt((np.mean(x**2) + 1e-12) / (np.mean(y**2) + 1e-12))

    def augment(self, x: np.ndarray, key: str) -> tuple[np.ndarray, list[str]]:
        """One augmented copy of ``x``; returns it with the names of the applied effects."""
        c, rng, sr = self.cfg, _rng(self.cfg.seed, key), self.cfg.sample_rate
        used: list[str] = []
        if self.noises and rng.random() < c.noise.prob:
            x, _ = self._noise(x, rng), used.append("noise")
        if rng.random() < c.reverb.prob:
            x, _ = self._reverb(x, rng), used.append("reverb")
        if rng.random() < c.resample.prob and c.resample.new_sample_rate:
            new = int(rng.choice(c.resample.new_sample_rate))
            if new != sr:  # band-limit through another rate and come back
                x = to_mono_rate(to_mono_rate(x, sr, new), new, sr)
                used.append("resample")
        if rng.random() < c.shift.prob:
            ms = rng.uniform(c.shift.min_shift_ms, c.shift.max_shift_ms)
            n = int(abs(ms) * sr / 1000)
            if n:
                x = (
                    np.concatenate([np.zeros(n, x.dtype), x[:-n]])
                    if ms > 0
                    else np.concatenate([x[n:], np.zeros(n, x.dtype)])
                )
                used.append("shift")
        if rng.random() < c.volume.prob:
            gain = rng.uniform(c.volume.min_gain_dBFS, c.volume.max_gain_dBFS)
            x = x * 10 ** (gain / 20)
            used.append("volume")
        self.applied.update(used)
        return np.clip(x, -1.0, 1.0).astype(np.float32), used


def _write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    with atomic_open(path, "wb") as fh:
        sf.write(fh, x, sr, subtype="PCM_16", format="WAV")


def _load(u: Utterance, sr: int) -> np.ndarray:
    x = load_audio(u.wav, sr)
    if u.segment is not None:
        lo = int(round(u.segment.start * sr))
        hi = len(x) if u.segment.end < 0 else int(round(u.segment.end * sr))
        x = x[lo:hi]
    return x


def augment_data_dir(
    in_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: AugmentConfig
) -> dict[str, int]:
    """Write OUT with the originals plus copies; copies' audio goes to OUT/wav/. Returns counts."""
    src, out = Path(in_dir), Path(out_dir)
    if src.resolve() == out.resolve():
        raise ValueError("--out-dir must differ from --data-dir")
    import torch

    # torch's resampling kernels round differently with other thread counts; one thread
    # makes a re-run byte-identical wherever it runs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _augment(src, out, cfg)
    finally:
        torch.set_num_threads(threads)


def _augment(src: Path, out: Path, cfg: AugmentConfig) -> dict[str, int]:
    aug = Augmenter(cfg)
    sr = cfg.sample_rate
    counts: Counter = Counter()
    wav_dir = (out / "wav").resolve()
    segmented = (src / "segments").is_file()
    with KeyStore(out) as store:
        # results go to disk and come back sorted: memory does not grow with the corpus
        store.create(
            "res",
            "utt TEXT PRIMARY KEY, wav TEXT, text TEXT, spk TEXT, rec TEXT, "
            "start REAL, end_ REAL, dur REAL",
        )

        def add(u: Utterance) -> None:
            seg = u.segment
            if seg is None and segmented:  # a data dir has segments for all or none
                seg = Segment(u.utt, 0.0, -1.0)
            store.db.execute(
                "INSERT INTO res VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    u.utt,
                    u.wav,
                    u.text,
                    u.spk,
                    seg and seg.recording,
                    seg and seg.start,
                    seg and seg.end,
                    u.duration,
                ),
            )

        def copy(key: str, spk: str, y: np.ndarray, text: str) -> None:
            path = wav_dir / f"{key}.wav"
            _write_wav(path, y, sr)
            add(Utterance(key, str(path), text, spk, None, round(len(y) / sr, 3)))

        for u in iter_data_dir(src, store):
            add(u)
            counts["original"] += 1
            x = _load(u, sr)
            variants = [(u.utt, u.spk, x)]
            if cfg.speed.factors and _rng(cfg.seed, "speed:" + u.utt).random() < cfg.speed.prob:
                for f in cfg.speed.factors:
                    key, spk = f"sp{f:g}-{u.utt}", f"sp{f:g}-{u.spk}"
                    y = speed_perturb(x, f, sr)
                    variants.append((key, spk, y))
                    copy(key, spk, y, u.text)
                    counts["speed"] += 1
            for key0, spk0, y0 in variants:
                for k in range(1, cfg.copies + 1):
                    key = f"aug{k}-{key0}"
                    y, used = aug.augment(y0, key)
                    if not used:  # no effect drawn: an identical copy would only add weight
                        counts["no effect drawn (no copy)"] += 1
                        continue
                    copy(key, spk0, y, u.text)
                    counts["augmented"] += 1
        with DataDirWriter(out, segmented, store) as writer:
            for utt, wav, text, spk, rec, start, end, dur in store.query(
                "SELECT * FROM res ORDER BY utt"
            ):
                seg = Segment(rec, start, end) if rec is not None else None
                writer.add(Utterance(utt, wav, text, spk, seg, dur))
    if (src / "rejects.tsv").is_file():
        atomic_write_bytes(out / "rejects.tsv", (src / "rejects.tsv").read_bytes())
    counts.update({f"effect {k}": v for k, v in aug.applied.items()})
    return dict(counts)
