"""Kaldi-compatible features with lhotse's extractors (fbank, hires MFCC).

lhotse reproduces Kaldi (and kaldi-native-fbank) when it is given samples in the int16 range
and the same framing, mel and energy options; ``FeatureConfig`` carries Kaldi's option names
and defaults so a Kaldi ``.conf`` translates one to one.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import yaml

from e2e_asr.data.schema import Fail, SchemaError, enforce_rules, parse_section

FEATURE_TYPES = ("fbank", "mfcc_hires")
INT16_SCALE = 32768.0


class FeatureError(SchemaError):
    pass


@dataclass(frozen=True)
class FeatureConfig:
    type: str = "fbank"
    sample_rate: int = 16000
    num_mel_bins: int = 80
    num_ceps: int = 0  # mfcc only
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 1.0  # Kaldi's default; in int16 units
    # dither noise comes from a generator seeded with (dither_seed, utterance key): the same
    # utterance gets the same features in every run, resumed job and job layout
    dither_seed: int = 0
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist (Kaldi)
    use_energy: bool = False
    raw_energy: bool = True
    energy_floor: float = 0.0
    cepstral_lifter: float = 22.0  # mfcc only

    def __post_init__(self) -> None:
        enforce_rules(self, FeatureError, "feature config")

    def check(self, fail: Fail) -> None:
        if self.type not in FEATURE_TYPES:
            fail("type", f"must be one of {FEATURE_TYPES}, got {self.type!r}")
        if self.type == "mfcc_hires" and not 0 < self.num_ceps <= self.num_mel_bins:
            fail("num_ceps", "mfcc_hires needs 0 < num_ceps <= num_mel_bins")

    @property
    def dim(self) -> int:
        base = self.num_mel_bins if self.type == "fbank" else self.num_ceps
        # Kaldi puts the energy in place of c0 for MFCC, and adds a column for fbank.
        return base + (1 if self.use_energy and self.type == "fbank" else 0)

    @property
    def frame_length(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    def to_dict(self) -> dict:
        return {**asdict(self), "dim": self.dim}

    @classmethod
    def from_dict(cls, d: dict, where: str = "feature config") -> FeatureConfig:
        """Read and check a feature config (``parse_section``); ``dim``, as written by
        ``to_dict``, must agree with the options. ``FeatureError`` names ``where`` and key."""
        if not isinstance(d, dict):
            raise FeatureError(f"{where}: expected a mapping of feature options")
        d = dict(d)
        dim = d.pop("dim", None)
        cfg = parse_section(cls, d, "", where, error=FeatureError)
        if dim is not None and int(dim) != cfg.dim:
            raise FeatureError(f"{where}: dim {dim} does not match the options (gives {cfg.dim})")
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> FeatureConfig:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh) or {}, str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# THE list of feature options that may differ between the features a model was trained on and
# the features it is given (stage 1 vs the base model, stage 2 train vs dev vs base model,
# stage 3 json dir vs base model, decoding vs the packaged model): dither only adds noise at
# extraction time, and its seed only chooses that noise. Every other option changes what the
# model sees and must be equal.
MAY_DIFFER = ("dither", "dither_seed")


def _as_config(c: FeatureConfig | dict[str, Any], where: str) -> FeatureConfig:
    return c if isinstance(c, FeatureConfig) else FeatureConfig.from_dict(c, where)


def feature_mismatch(
    a: FeatureConfig | dict[str, Any],
    b: FeatureConfig | dict[str, Any],
    names: tuple[str, str] = ("data", "model"),
) -> list[str]:
    """THE feature-compatibility rule: ``[]`` when features made with ``a`` may be fed to a
    model trained on ``b``; otherwise one ``"key: data 'x' vs model 'y'"`` line per option
    that differs. Dicts (a ``feature.yaml``, a checkpoint's ``feature_config``) are read with
    ``FeatureConfig.from_dict`` first, so an option left out means Kaldi's default. Only the
    options in ``MAY_DIFFER`` may differ. Bad configs raise ``FeatureError``."""
    da = _as_config(a, f"{names[0]} feature config").to_dict()
    db = _as_config(b, f"{names[1]} feature config").to_dict()
    return [
        f"{k}: {names[0]} {da[k]!r} vs {names[1]} {db[k]!r}"
        for k in da
        if k not in MAY_DIFFER and da[k] != db[k]
    ]


def for_decoding(cfg: FeatureConfig) -> FeatureConfig:
    """The model's feature config as decoding uses it: dither 0, so decoding is deterministic
    (only ``MAY_DIFFER`` options change: ``feature_mismatch(cfg, for_decoding(cfg)) == []``)."""
    return replace(cfg, dither=0.0)


def utterance_seed(key: str, seed: int) -> int:
    """A 64-bit generator seed from the config's ``dither_seed`` and an utterance key."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@lru_cache(maxsize=8)
def _extractor(cfg: FeatureConfig):  # -> lhotse Fbank | Mfcc
    # Imported here so that configs, finished-job checks and merges do not pay for torch.
    from lhotse import Fbank, FbankConfig, Mfcc, MfccConfig

    common = dict(
        sampling_rate=cfg.sample_rate,
        frame_length=cfg.frame_length_ms / 1000,
        frame_shift=cfg.frame_shift_ms / 1000,
        round_to_power_of_two=cfg.round_to_power_of_two,
        remove_dc_offset=cfg.remove_dc_offset,
        preemph_coeff=cfg.preemph_coeff,
        window_type=cfg.window_type,
        dither=0.0,  # added by compute_features from a seeded generator
        snip_edges=cfg.snip_edges,
        # Kaldi floors the frame energy at FLT_EPSILON before the log and applies
        # energy_floor (if > 0) after; lhotse has a single floor, so give it the larger one.
        energy_floor=max(cfg.energy_floor, float(np.finfo(np.float32).eps)),
        raw_energy=cfg.raw_energy,
        use_energy=cfg.use_energy,
        low_freq=cfg.low_freq,
        high_freq=cfg.high_freq,
        num_mel_bins=cfg.num_mel_bins,
    )
    # snip_edges=True is what Kaldi does; lhotse warns about its own duration bookkeeping, which
    # we do not use (frame counts come from the matrices). Its mel-scale code also trips a
    # numpy deprecation warning. Both happen only here, at construction.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.type == "fbank":
            return Fbank(FbankConfig(**common))
        return Mfcc(
            MfccConfig(**common, num_ceps=cfg.num_ceps, cepstral_lifter=int(cfg.cepstral_lifter))
        )


def compute_features(samples: np.ndarray, cfg: FeatureConfig, key: str = "") -> np.ndarray:
    """Float samples in [-1, 1] at ``cfg.sample_rate`` → ``float32 [T, cfg.dim]`` (Kaldi-exact).

    Dither (Kaldi's: ``dither`` × standard normal noise on every int16-scaled sample) is drawn
    from a generator seeded with ``utterance_seed(key, cfg.dither_seed)``: the same key and
    samples give the same features in any process, job split or re-run."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.shape[0] < cfg.frame_length:
        raise FeatureError(
            f"{x.shape[0]} samples is shorter than one {cfg.frame_length_ms} ms frame"
        )
    x = x * INT16_SCALE
    if cfg.dither != 0.0:
        rng = np.random.default_rng(utterance_seed(key, cfg.dither_seed))
        x = x + np.float32(cfg.dither) * rng.standard_normal(x.shape[0], dtype=np.float32)
    feats = _extractor(replace(cfg, dither=0.0, dither_seed=0)).extract(x, cfg.sample_rate)
    return np.ascontiguousarray(feats, dtype=np.float32)
