"""A model sherpa-onnx's offline CTC recognizer for WeNet-style models loads as is.

sherpa-onnx (``OfflineRecognizer.from_wenet_ctc``, ``--wenet-ctc-model`` in its C++ tools)
wants one ONNX graph: inputs ``x`` [N, T, 80] float (raw fbank; CMVN inside the graph) and
``x_lens`` [N] int64, outputs ``log_probs`` [N, T', V] (CTC log-softmax) and
``log_probs_lens`` [N] int64, metadata ``vocab_size`` and ``subsampling_factor`` (it aborts
without them), plus a ``tokens.txt`` of ``symbol id`` lines that holds ``<blank>``.

Our ``encoder.onnx`` already is encoder + CMVN + CTC log-softmax on raw features, and it is
parity-checked against PyTorch; the sherpa graph is that very graph with its tensors renamed
and the encoder-output tensor dropped from the outputs, so it computes exactly the same
numbers (the int8 copy likewise comes from ``encoder.int8.onnx``, whose quantization is
weight-only for this reason: int8 weights, float arithmetic, so that sherpa-onnx's slightly
different fbank gives the same hypotheses as ours; see export/quantize.py).

Features: sherpa-onnx computes its own fbank with kaldi-native-fbank, with defaults that
differ from Kaldi's (``high_freq`` -400 instead of 0, ``snip_edges`` false). The model must
get the features it was trained with, so ``sherpa_feature_options`` translates our
``feature.yaml`` into sherpa-onnx's ``FeatureExtractorConfig`` fields (written to
``sherpa-onnx/feature_options.json``), and ``sherpa_recognizer`` builds a recognizer with
them. Configurations sherpa-onnx cannot reproduce (MFCC, another frame length/shift or window,
energy, another low frequency) are refused: the export then writes no sherpa-onnx model and
says why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from e2e_asr.data.features import FeatureConfig, feature_mismatch
from e2e_asr.data.io import atomic_path, atomic_write_text
from e2e_asr.data.units import write_units
from e2e_asr.decode.onnx_scorer import ENCODER_INPUTS, ENCODER_OUTPUTS

SHERPA_DIR = "sherpa-onnx"
INPUTS = ("x", "x_lens")
OUTPUTS = ("log_probs", "log_probs_lens")
MODEL_TYPE = "wenet_ctc"
VERSION = "1"
# sherpa-onnx pads batched features with log(1e-10); our masks ignore padding anyway
FEATURE_OPTIONS_FILE = "feature_options.json"


class SherpaExportError(ValueError):
    """The model cannot be served by sherpa-onnx as it is; the message says why."""


def sherpa_feature_options(cfg: FeatureConfig) -> dict[str, Any]:
    """sherpa-onnx ``FeatureExtractorConfig`` fields that reproduce ``cfg`` (Kaldi fbank).

    Raises SherpaExportError for settings its feature extractor cannot produce.
    """
    # what sherpa-onnx's feature extractor computes: Kaldi fbank with Kaldi's defaults, except
    # for the options it takes from its config; compared through the project's one feature rule
    theirs = FeatureConfig(
        type="fbank",
        sample_rate=cfg.sample_rate,
        num_mel_bins=cfg.num_mel_bins,
        low_freq=cfg.low_freq,
        high_freq=cfg.high_freq,
        snip_edges=cfg.snip_edges,
        dither=0.0,
    )
    problems = feature_mismatch(cfg, theirs, ("model", "sherpa-onnx"))
    if problems:
        raise SherpaExportError("cannot reproduce the model's features: " + "; ".join(problems))
    return {
        "sampling_rate": cfg.sample_rate,
        "feature_dim": cfg.num_mel_bins,
        "low_freq": cfg.low_freq,
        "high_freq": cfg.high_freq,
        "dither": 0.0,  # deterministic, as our own decoding
        "snip_edges": cfg.snip_edges,
        # samples scaled to the int16 range: sherpa-onnx sets normalize_samples=False itself
        # for WeNet CTC models
        "normalize_samples": False,
    }


def _renamed_graph(src: Path, vocab_size: int, subsampling: int, extra: dict[str, str]):
    """The encoder graph with sherpa-onnx's tensor names and metadata (an onnx ModelProto)."""
    import onnx

    model = onnx.load(str(src))
    g = model.graph
    feats, feat_lens = ENCODER_INPUTS
    enc, enc_lens, ctc_logp = ENCODER_OUTPUTS
    rename = {feats: INPUTS[0], feat_lens: INPUTS[1], ctc_logp: OUTPUTS[0], enc_lens: OUTPUTS[1]}
    names = [i.name for i in g.input]
    if names != list(ENCODER_INPUTS):
        raise SherpaExportError(f"{src}: inputs {names}, expected {list(ENCODER_INPUTS)}")
    for node in g.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
        for k, name in enumerate(node.output):
            if name in rename:
                node.output[k] = rename[name]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name in rename:
            vi.name = rename[vi.name]
    # outputs in sherpa-onnx's order; the encoder output stays an internal tensor
    by_name = {o.name: o for o in g.output}
    keep = [onnx.ValueInfoProto() for _ in OUTPUTS]
    for proto, name in zip(keep, OUTPUTS, strict=True):
        proto.CopyFrom(by_name[name])
    del g.output[:]
    g.output.extend(keep)
    if enc in {o.name for o in g.output}:
        raise SherpaExportError("internal: encoder output still listed")
    meta = {
        "vocab_size": str(vocab_size),
        "subsampling_factor": str(subsampling),
        "model_type": MODEL_TYPE,
        "version": VERSION,
        **extra,
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    return model


def _save(model, path: Path) -> None:
    import onnx

    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def _check_same(src: Path, dst: Path, idim: int) -> float:
    """Run both graphs on random features; return the max abs difference of the log-probs
    (0 expected: the graphs are the same computation)."""
    from e2e_asr.decode.onnx_scorer import make_session

    a, b = make_session(src, 1), make_session(dst, 1)
    rng = np.random.default_rng(0)
    worst = 0.0
    for lens in ((93,), (151, 120)):
        x = rng.standard_normal((len(lens), max(lens), idim)).astype(np.float32) * 3 + 8
        n = np.asarray(lens, dtype=np.int64)
        _, o_lens, o_lp = a.run(list(ENCODER_OUTPUTS), {"feats": x, "feat_lens": n})
        s_lp, s_lens = b.run(list(OUTPUTS), {"x": x, "x_lens": n})
        if not np.array_equal(o_lens, s_lens) or o_lp.shape != s_lp.shape:
            raise SherpaExportError(f"{dst}: output lengths differ from {src.name}")
        worst = max(worst, float(np.abs(o_lp - s_lp).max()))
    return worst


def write_sherpa_model(
    export_dir: str | os.PathLike,
    units: list[str],
    feat_cfg: FeatureConfig,
    subsampling: int,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """Write ``export_dir/sherpa-onnx/`` (model.onnx, model.int8.onnx if the int8 encoder
    exists, tokens.txt, feature_options.json) from the export's encoder graphs.

    Returns what metadata.json records about it, or None (with a logged reason) when the
    features cannot be reproduced by sherpa-onnx.
    """
    d = Path(export_dir)
    try:
        options = sherpa_feature_options(feat_cfg)
    except SherpaExportError as e:
        log(f"WARNING: no sherpa-onnx model: {e}")
        return None
    out = d / SHERPA_DIR
    out.mkdir(exist_ok=True)
    extra = {
        "comment": "e2e_asr export: encoder + CMVN + CTC log-softmax on raw Kaldi fbank",
        "feature_options": json.dumps(options, sort_keys=True),
    }
    info: dict[str, Any] = {"dir": SHERPA_DIR, "feature_options": options, "files": []}
    for src_name, dst_name in (
        ("encoder.onnx", "model.onnx"),
        ("encoder.int8.onnx", "model.int8.onnx"),
    ):
        src = d / src_name
        if not src.is_file():
            continue
        model = _renamed_graph(src, len(units), subsampling, extra)
        _save(model, out / dst_name)
        diff = _check_same(src, out / dst_name, feat_cfg.dim)
        if diff > 0.0:
            raise SherpaExportError(
                f"{out / dst_name}: differs from {src_name} by {diff:.3g} (expected identical)"
            )
        info["files"].append(dst_name)
    write_units(out / "tokens.txt", list(units))
    atomic_write_text(out / FEATURE_OPTIONS_FILE, json.dumps(options, indent=2) + "\n")
    log(f"sherpa-onnx model: {', '.join(info['files'])} + tokens.txt in {SHERPA_DIR}/")
    return info


def sherpa_recognizer(
    export_dir: str | os.PathLike, quantized: bool = False, num_threads: int = 1
):  # -> sherpa_onnx.OfflineRecognizer
    """A sherpa-onnx OfflineRecognizer (greedy CTC) for ``export_dir/sherpa-onnx`` with the
    features the model was trained with (needs the ``sherpa-onnx`` package).

    The same as ``sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model, tokens)``, except that
    the fbank options of ``feature_options.json`` are set (``from_wenet_ctc`` takes none).
    """
    import sherpa_onnx
    from sherpa_onnx.offline_recognizer import _Recognizer

    d = Path(export_dir) / SHERPA_DIR
    model = d / ("model.int8.onnx" if quantized else "model.onnx")
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no sherpa-onnx model (see the export log)")
    options = json.loads((d / FEATURE_OPTIONS_FILE).read_text(encoding="utf-8"))
    feat = sherpa_onnx.FeatureExtractorConfig()
    for k, v in options.items():
        setattr(feat, k, v)
    config = sherpa_onnx.OfflineRecognizerConfig(
        feat_config=feat,
        model_config=sherpa_onnx.OfflineModelConfig(
            wenet_ctc=sherpa_onnx.OfflineWenetCtcModelConfig(model=str(model)),
            tokens=str(d / "tokens.txt"),
            num_threads=num_threads,
            provider="cpu",
            model_type=MODEL_TYPE,
        ),
        decoding_method="greedy_search",
    )
    rec = sherpa_onnx.OfflineRecognizer.__new__(sherpa_onnx.OfflineRecognizer)
    rec.recognizer = _Recognizer(config)
    rec.config = config
    return rec


def sherpa_transcribe(
    rec, utts: list[tuple[str, np.ndarray]], sample_rate: int = 16000
) -> list[tuple[str, str]]:
    """(key, float samples in [-1, 1]) -> (key, text) with a sherpa-onnx recognizer."""
    streams = []
    for _, samples in utts:
        s = rec.create_stream()
        s.accept_waveform(sample_rate, np.ascontiguousarray(samples, dtype=np.float32))
        streams.append(s)
    rec.decode_streams(streams)
    return [(k, s.result.text) for (k, _), s in zip(utts, streams, strict=True)]
