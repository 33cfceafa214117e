"""Decoding a list of recordings/segments in one process.

A job builds its own recognizer and works through its items in chunks, so the audio and
features in memory are bounded by the chunk, not the list. Data dirs are decoded in parallel
jobs through the job runner by ``e2e_asr.decode.split_jobs``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2e_asr.data.audio import AudioError, load_audio
from e2e_asr.data.datadir import Segment, iter_kv, read_data_dir
from e2e_asr.data.features import FeatureError

CHUNK = 64  # utterances whose features are in memory at once


@dataclass(frozen=True)
class Item:
    key: str
    wav: str  # path or "cmd |"
    segment: Segment | None = None


@dataclass
class ModelSpec:
    """How to build a recognizer, picklable for worker processes."""

    model_dir: str | None = None
    checkpoint: str | None = None
    backend: str = "torch"
    quantized: bool = False
    decode_yaml: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def check_decode_config(self) -> None:
        """Apply the overrides to the decode config the jobs will start from (``decode_yaml``,
        else the export's ``decode.yaml``), so that a rule they break together (hotwords with
        ctc_greedy, say) is refused before any job starts; ``DecodeConfigError`` names it. A
        checkpoint's own options are checked when its jobs load it."""
        from e2e_asr.decode.config import DecodeConfig

        exported = Path(self.model_dir) / "decode.yaml" if self.model_dir else None
        if self.decode_yaml:
            base = DecodeConfig.from_yaml(self.decode_yaml)
        elif exported is not None and exported.is_file():
            base = DecodeConfig.from_yaml(exported)
        else:
            base = DecodeConfig()
        base.updated(**self.overrides)

    def build(self, num_threads: int):  # -> Recognizer
        from e2e_asr.decode.config import DecodeConfig
        from e2e_asr.decode.recognizer import Recognizer

        dcfg = DecodeConfig.from_yaml(self.decode_yaml) if self.decode_yaml else None
        if self.checkpoint:
            return Recognizer.from_checkpoint(self.checkpoint, dcfg, num_threads, **self.overrides)
        return Recognizer.from_model_dir(
            self.model_dir, self.backend, self.quantized, num_threads, dcfg, **self.overrides
        )


@dataclass
class JobResult:
    hyps: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0  # features + search, excluding model loading
    config: dict[str, Any] = field(default_factory=dict)  # the effective decode options
    times: dict[str, list] = field(default_factory=dict)  # key -> [TokenTime] (times=True)
    symbols: list[str] = field(default_factory=list)  # the model's units (times=True)


def items_from_wav_scp(path: str | os.PathLike) -> list[Item]:
    """wav.scp lines in file order (the transcription command keeps input order)."""
    return [Item(k, v) for k, v in iter_kv(path)]


def items_from_data_dir(data_dir: str | os.PathLike) -> tuple[list[Item], dict[str, str]]:
    """Utterances (segments resolved) and reference texts of a Kaldi data dir."""
    utts = read_data_dir(data_dir)
    return [Item(u.utt, u.wav, u.segment) for u in utts], {u.utt: u.text for u in utts}


class _AudioCache:
    """Keeps the last recording so consecutive segments of one file read it once."""

    def __init__(self, sample_rate: int) -> None:
        self.sr = sample_rate
        self.key: str | None = None
        self.samples: np.ndarray | None = None

    def get(self, item: Item) -> np.ndarray:
        if item.wav != self.key:
            self.samples = load_audio(item.wav, self.sr)
            self.key = item.wav
        x = self.samples
        if item.segment is None:
            return x
        start = int(round(item.segment.start * self.sr))
        end = x.shape[0] if item.segment.end < 0 else int(round(item.segment.end * self.sr))
        if start >= x.shape[0] or end <= start:
            raise AudioError(
                "bad_segment",
                f"segment {item.segment.start}-{item.segment.end} s outside the recording",
            )
        return x[start:end]


def run_job(
    spec: ModelSpec, items: Sequence[Item], num_threads: int, verbose: bool, times: bool = False
) -> JobResult:
    """Decode ``items``; unreadable audio is recorded in ``failed``, never dropped silently.
    With ``times``, each token's start, duration and confidence go to ``res.times``."""
    rec = spec.build(num_threads)
    sr = rec.feature_config.sample_rate
    cache = _AudioCache(sr)
    res = JobResult(config=rec.config.to_dict())
    if times:
        res.symbols = list(rec.tokenizer.units)
    t0 = time.perf_counter()
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        feats = []
        for it in chunk:
            try:
                samples = cache.get(it)
                f = rec.features(samples)
                if f.shape[0] > rec.max_frames:
                    raise FeatureError(
                        f"{f.shape[0]} frames is longer than the model's maximum "
                        f"({rec.max_frames}); split the recording"
                    )
                feats.append((it.key, f))
                res.audio_seconds += samples.shape[0] / sr
            except (AudioError, FeatureError, OSError) as e:
                res.failed[it.key] = f"{type(e).__name__}: {e}"
        if times:
            for (key, _), (ids, tt) in zip(feats, rec.decode_with_times(feats), strict=True):
                res.hyps[key] = rec.text(ids)
                res.times[key] = tt
        else:
            for (key, _), ids in zip(feats, rec.decode_features(feats), strict=True):
                res.hyps[key] = rec.text(ids)
        if verbose:
            print(f"decoded {min(start + CHUNK, len(items))}/{len(items)}", file=sys.stderr)
    res.decode_seconds = time.perf_counter() - t0
    return res


def basename_key(path: str) -> str:
    """Utterance id of a wav given on the command line: its file name without extension."""
    return Path(path).stem
