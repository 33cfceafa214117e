"""Audio in, text out: features, batching and search over a torch or ONNX Runtime model.

A recognizer is built from an export directory (``model.pt``, ONNX graphs, ``units.txt``,
``feature.yaml``, ``decode.yaml``) or from a raw training checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2e_asr.data.features import FeatureConfig, compute_features, for_decoding
from e2e_asr.data.units import Tokenizer, read_units
from e2e_asr.decode.alignment import TokenTime, token_times
from e2e_asr.decode.config import DecodeConfig
from e2e_asr.decode.context_graph import ContextGraph, HotwordError, load_hotwords
from e2e_asr.decode.scorer import Scorer
from e2e_asr.decode.search import decode_batch

# Fewest input frames that leave at least one encoder frame, by subsampling rate
# (conv2d: ((T - 1) // 2 - 1) // 2 >= 1, and likewise for conv2d6 / conv2d8).
MIN_FRAMES = {1: 1, 4: 7, 6: 11, 8: 15}
DEFAULT_MAX_ENCODER_FRAMES = 5000


class RecognizerError(RuntimeError):
    """The model directory or an input cannot be used; the message names it."""


class Recognizer:
    def __init__(
        self,
        scorer: Scorer,
        units: list[str],
        feature_config: FeatureConfig,
        decode_config: DecodeConfig,
        subsampling: int = 4,
        max_encoder_frames: int = DEFAULT_MAX_ENCODER_FRAMES,
    ) -> None:
        if len(units) != scorer.vocab_size:
            raise RecognizerError(
                f"{len(units)} units but the model has {scorer.vocab_size} outputs"
            )
        self.scorer = scorer
        self.tokenizer = Tokenizer(units)
        # Decoding is deterministic: Kaldi's default dither of 1.0 (used in training) would
        # make two runs over the same file disagree.
        self.feature_config = for_decoding(feature_config)
        self.config = decode_config
        self.subsampling = subsampling
        self.min_frames = MIN_FRAMES.get(subsampling, 2 * subsampling)
        self.max_frames = max_encoder_frames * subsampling
        # time step of one CTC output frame, for token timestamps
        self.frame_seconds = self.feature_config.frame_shift_ms / 1000.0 * subsampling
        self.context: ContextGraph | None = None
        if decode_config.hotwords:
            try:
                self.context = load_hotwords(
                    decode_config.hotwords,
                    self.tokenizer,
                    decode_config.hotword_score,
                    lambda m: print(f"hotwords: {m}", file=sys.stderr),
                )
            except HotwordError as e:
                raise RecognizerError(str(e)) from None

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | os.PathLike,
        backend: str = "torch",
        quantized: bool = False,
        num_threads: int = 0,
        decode_config: DecodeConfig | None = None,
        **overrides: Any,
    ) -> Recognizer:
        """Load an export directory; ``decode_config`` replaces its decode.yaml and
        ``overrides`` replace single options."""
        d = Path(model_dir)
        for name in ("units.txt", "feature.yaml", "decode.yaml"):
            if not (d / name).is_file():
                raise RecognizerError(f"{d}: missing {name}; is this an export directory?")
        meta: dict[str, Any] = {}
        if (d / "metadata.json").is_file():
            meta = json.loads((d / "metadata.json").read_text(encoding="utf-8"))
        units = read_units(d / "units.txt")
        feat = FeatureConfig.from_yaml(d / "feature.yaml")
        dcfg = (decode_config or DecodeConfig.from_yaml(d / "decode.yaml")).updated(**overrides)
        if backend == "torch":
            if quantized:
                raise RecognizerError("--quantized needs --backend onnx (int8 graphs are ONNX)")
            scorer = _torch_scorer(d / "model.pt", num_threads)
            sub = scorer.model.subsampling_rate
        elif backend == "onnx":
            suffix = ".int8.onnx" if quantized else ".onnx"
            enc, dec = d / f"encoder{suffix}", d / f"decoder{suffix}"
            for p in (enc, dec):
                if not p.is_file():
                    raise RecognizerError(f"{d}: missing {p.name}")
            from e2e_asr.decode.onnx_scorer import OnnxScorer

            # the incremental decoder's graphs; an export made before them has neither and
            # decodes with the whole-prefix decoder graph
            mem, step = d / f"decoder_memory{suffix}", d / f"decoder_step{suffix}"
            if mem.is_file() != step.is_file():
                raise RecognizerError(
                    f"{d}: {mem.name} and {step.name} go together; one is missing"
                )
            if not step.is_file():
                mem = step = None
            scorer = OnnxScorer.from_files(enc, dec, len(units), num_threads, mem, step)
            sub = int(meta.get("subsampling", 4))
        else:
            raise RecognizerError(f"unknown backend {backend!r} (torch or onnx)")
        dcfg.check_vocab(len(units), str(d / "decode.yaml"))
        return cls(
            scorer,
            units,
            feat,
            dcfg,
            sub,
            int(meta.get("max_encoder_frames", DEFAULT_MAX_ENCODER_FRAMES)),
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        decode_config: DecodeConfig | None = None,
        num_threads: int = 0,
        **overrides: Any,
    ) -> Recognizer:
        """A raw training checkpoint (e.g. the base model), decoded with PyTorch."""
        scorer = _torch_scorer(checkpoint, num_threads)
        payload = scorer.payload
        units, fc = payload.get("units"), payload.get("feature_config")
        if not units or not fc:
            raise RecognizerError(f"checkpoint {checkpoint}: needs 'units' and 'feature_config'")
        if decode_config is None:
            decode_config = DecodeConfig.from_checkpoint(
                payload, f"checkpoint {checkpoint}", lambda m: print(m, file=sys.stderr)
            )
        feat = FeatureConfig.from_dict(fc, f"checkpoint {checkpoint} feature_config")
        return cls(
            scorer,
            list(units),
            feat,
            decode_config.updated(**overrides),
            scorer.model.subsampling_rate,
        )

    # -- recognition ---------------------------------------------------------------------

    def features(self, samples: np.ndarray) -> np.ndarray:
        return compute_features(samples, self.feature_config)

    def decode_features(self, items: Sequence[tuple[str, np.ndarray]]) -> list[list[int]]:
        """Token ids for each (key, feats [T, D]), in input order.

        Utterances are batched by length (longest first) so padding stays small. Inputs too
        short to give one encoder frame decode to nothing; inputs longer than the model's
        positional tables are refused with the key in the message.
        """
        return self._decode(items, None)

    def decode_with_times(
        self, items: Sequence[tuple[str, np.ndarray]]
    ) -> list[tuple[list[int], list[TokenTime]]]:
        """Like ``decode_features``, plus each token's start, duration and confidence from a
        CTC forced alignment of the final hypothesis (``e2e_asr.decode.alignment``)."""
        posteriors: dict[int, np.ndarray] = {}
        hyps = self._decode(items, posteriors)
        out = []
        for i, ids in enumerate(hyps):
            if i not in posteriors:
                out.append((ids, []))
                continue
            energy = None
            if self.feature_config.type == "fbank":  # log mel energy per 10 ms frame
                f = items[i][1].astype(np.float64)
                m = f.max(axis=1, keepdims=True)
                energy = (m + np.log(np.exp(f - m).sum(axis=1, keepdims=True)))[:, 0]
            tt = token_times(
                posteriors[i], ids, self.frame_seconds, energy=energy, subsampling=self.subsampling
            )
            out.append((ids, tt))
        return out

    def _decode(
        self, items: Sequence[tuple[str, np.ndarray]], posteriors: dict[int, np.ndarray] | None
    ) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in items]
        order = []
        for i, (key, f) in enumerate(items):
            if f.ndim != 2:
                raise RecognizerError(f"{key}: features must be [T, D], got shape {f.shape}")
            if f.shape[0] > self.max_frames:
                raise RecognizerError(
                    f"{key}: {f.shape[0]} frames is longer than the model's maximum "
                    f"({self.max_frames}); split the recording"
                )
            if f.shape[0] >= self.min_frames:
                order.append(i)
        order.sort(key=lambda i: -items[i][1].shape[0])
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            lens = np.array([items[i][1].shape[0] for i in idx], dtype=np.int64)
            dim = items[idx[0]][1].shape[1]
            batch = np.zeros((len(idx), int(lens.max()), dim), dtype=np.float32)
            for j, i in enumerate(idx):
                batch[j, : lens[j]] = items[i][1]
            lps: list[np.ndarray] | None = [] if posteriors is not None else None
            hyps = decode_batch(self.scorer, batch, lens, self.config, self.context, lps)
            for j, (i, hyp) in enumerate(zip(idx, hyps, strict=True)):
                out[i] = hyp
                if posteriors is not None and lps is not None:
                    posteriors[i] = lps[j]
        return out

    def text(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(ids)

    def transcribe(self, utts: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, str]]:
        """(key, samples in [-1, 1] at the feature sample rate) -> (key, text), input order."""
        feats = [(k, self.features(s)) for k, s in utts]
        hyps = self.decode_features(feats)
        return [(k, self.text(h)) for (k, _), h in zip(utts, hyps, strict=True)]


def _torch_scorer(path: str | os.PathLike, num_threads: int):
    import torch

    from e2e_asr.decode.torch_scorer import TorchScorer
    from e2e_asr.model.checkpoint import load_model

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    model, payload = load_model(path)
    scorer = TorchScorer(model)
    scorer.payload = payload  # kept for from_checkpoint's units/feature config
    return scorer
