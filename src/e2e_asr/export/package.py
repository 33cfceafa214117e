"""The export directory (stage 5): a weights-only model package, ONNX graphs, int8 copies.

Everything is built in a temporary directory beside the target and swapped in at the end,
so the export directory is either the old complete one or the new complete one. If the fp32
graphs fail the parity check the build is kept as ``<out>.failed`` for inspection and the
export raises.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from e2e_asr.data.features import FeatureConfig
from e2e_asr.data.io import atomic_write_text
from e2e_asr.data.units import write_units
from e2e_asr.decode.config import DecodeConfig
from e2e_asr.decode.onnx_scorer import OnnxScorer
from e2e_asr.export.onnx_export import export_model
from e2e_asr.export.parity import check_fp32, compare
from e2e_asr.export.quantize import DYNAMIC, WEIGHT_ONLY, quantize_int8, quantize_weights_int8
from e2e_asr.export.sherpa import write_sherpa_model
from e2e_asr.model.checkpoint import CheckpointError, load_model, save_checkpoint
from e2e_asr.model.embedding import DEFAULT_MAX_LEN

PACKAGE_KEYS = ("model", "config", "units", "feature_config")
# the ONNX graphs, each also quantized (<name>.int8.onnx); decoder_memory + decoder_step are
# the incremental decoder (exports made before them decode with decoder.onnx alone)
GRAPHS = ("encoder", "decoder", "decoder_memory", "decoder_step")
# how each int8 copy is made (export/quantize.py). The encoder's is also sherpa-onnx's
# model.int8.onnx, the very same graph: weight-only, float arithmetic, so that sherpa-onnx's
# fbank and ours give the same hypotheses (activation quantization flips hypotheses on tiny
# input differences). The decoders, which only our own decoding runs, keep the faster
# dynamic quantization.
INT8_METHODS = {
    "encoder": WEIGHT_ONLY,
    "decoder": DYNAMIC,
    "decoder_memory": DYNAMIC,
    "decoder_step": DYNAMIC,
}
INT8_DESCRIPTIONS = {
    WEIGHT_ONLY: "weight-only (int8 weights, float arithmetic)",
    DYNAMIC: "dynamic (int8 weights, activations quantized on each call)",
}


class ExportError(RuntimeError):
    """The export cannot be made; the message says why and which file."""


def decode_config_for(
    payload: dict[str, Any], decode_yaml: str | os.PathLike | None, warn: Callable[[str], None]
) -> DecodeConfig:
    """A decode config file if given, else the training config's ``decode_config``
    (keys we do not know are dropped with a warning), else the defaults."""
    if decode_yaml is not None:
        return DecodeConfig.from_yaml(decode_yaml)
    return DecodeConfig.from_checkpoint(payload, "checkpoint", warn)


def _stderr(msg: str) -> None:
    print(f"export: {msg}", file=sys.stderr)


def export_package(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    decode_yaml: str | os.PathLike | None = None,
    quantize: bool = True,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Build ``out_dir`` from ``checkpoint``; returns the metadata written to metadata.json."""
    model, payload = load_model(checkpoint)
    where = f"checkpoint {checkpoint}"
    units = payload.get("units")
    if not units or len(units) != model.odim:
        raise ExportError(
            f"{where}: units ({len(units or [])}) missing or not matching the model's "
            f"{model.odim} outputs"
        )
    if not payload.get("feature_config"):
        raise ExportError(f"{where}: no feature_config; the package could not compute features")
    feat_cfg = FeatureConfig.from_dict(payload["feature_config"], f"{where} feature_config")
    if feat_cfg.dim != model.idim:
        raise ExportError(
            f"{where}: feature_config gives {feat_cfg.dim}-dim features, the model takes "
            f"{model.idim}"
        )
    dcfg = decode_config_for(payload, decode_yaml, log)
    dcfg.check_vocab(model.odim, where)

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_checkpoint(build / "model.pt", {k: payload[k] for k in PACKAGE_KEYS})
        write_units(build / "units.txt", list(units))
        atomic_write_text(build / "feature.yaml", feat_cfg.to_yaml())
        atomic_write_text(build / "decode.yaml", yaml.safe_dump(dcfg.to_dict(), sort_keys=False))
        log("exporting encoder.onnx, decoder.onnx, decoder_memory.onnx and decoder_step.onnx")
        shapes = export_model(model, build)
        scorer = _scorer(build, ".onnx", model.odim)
        try:
            fp32 = check_fp32(model, scorer)
        except Exception:
            failed = out.with_name(out.name + ".failed")
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(build, failed)
            log(f"parity failed; the graphs are kept in {failed}")
            raise
        log(f"fp32 parity ok: {fp32.to_dict()['max_abs_diff']}")
        int8 = None
        if quantize:
            for method in (WEIGHT_ONLY, DYNAMIC):
                names = [n for n in GRAPHS if INT8_METHODS[n] == method]
                log(f"int8 {INT8_DESCRIPTIONS[method]}: {', '.join(names)}")
            for name in GRAPHS:
                src, dst = build / f"{name}.onnx", build / f"{name}.int8.onnx"
                if INT8_METHODS[name] == WEIGHT_ONLY:
                    quantize_weights_int8(src, dst)
                else:
                    quantize_int8(src, dst)
            q = _scorer(build, ".int8.onnx", model.odim)
            int8 = compare(model, q)  # values reported, not enforced: int8 is approximate
            if not int8.lengths_equal:  # but a graph that breaks on other shapes is broken
                raise ExportError(f"int8 graphs give other output shapes: {int8.cases}")
            log(
                f"int8 vs PyTorch: max abs diff {int8.to_dict()['max_abs_diff']}; CTC greedy "
                f"outputs identical for {int8.greedy_agreement:.0%} of the random test inputs, "
                f"token error {int8.greedy_token_error:.2f}%"
            )
        # the same encoder graphs under sherpa-onnx's names (a WeNet-style CTC model)
        sherpa = write_sherpa_model(build, list(units), feat_cfg, model.subsampling_rate, log)
        meta = _metadata(model, payload, feat_cfg, shapes, fp32, int8)
        meta["sherpa_onnx"] = sherpa
        meta["files"] = {
            str(p.relative_to(build)): p.stat().st_size
            for p in sorted(build.rglob("*"))
            if p.is_file()
        }
        atomic_write_text(build / "metadata.json", json.dumps(meta, indent=2, ensure_ascii=False))
        _swap_in(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return meta


def _scorer(build: Path, suffix: str, vocab_size: int) -> OnnxScorer:
    encoder, decoder, memory, step = (build / f"{name}{suffix}" for name in GRAPHS)
    return OnnxScorer.from_files(encoder, decoder, vocab_size, 0, memory, step)


def _metadata(model, payload, feat_cfg, shapes, fp32, int8) -> dict[str, Any]:
    mc = model.config
    return {
        "format": "e2e_asr export 1",
        "vocab_size": model.odim,
        "blank": model.blank,
        "sos": model.sos,
        "eos": model.eos,
        "feature_dim": model.idim,
        "subsampling": model.subsampling_rate,
        "encoder_type": getattr(mc, "encoder_type", "transformer"),
        "encoder_input_layer": mc.encoder_input_layer,
        # the positional tables end here: longer inputs are refused before decoding
        "max_encoder_frames": DEFAULT_MAX_LEN,
        "feature_config": feat_cfg.to_dict(),
        "epoch": payload.get("epoch"),
        "averaged_from": payload.get("averaged_from"),
        # decoder_memory/decoder_step (.onnx, .int8.onnx) are present: the searches use them
        "incremental_decoder": True,
        "export_shapes": shapes,
        "parity_fp32": fp32.to_dict(),
        "parity_int8": None if int8 is None else int8.to_dict(),
        # how each <graph>.int8.onnx was made (export/quantize.py); None: no int8 copies
        "int8_quantization": None if int8 is None else dict(INT8_METHODS),
        "torch_version": torch.__version__,
    }


def _swap_in(build: Path, out: Path) -> None:
    """Replace ``out`` by ``build`` with renames only."""
    # mkdtemp/mkstemp create owner-only modes; a shipped package should be world-readable
    os.chmod(build, 0o755)
    for p in build.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(build, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["CheckpointError", "ExportError", "export_package"]
