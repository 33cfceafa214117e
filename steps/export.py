#!/usr/bin/env python3
"""Stage 5: export an (averaged) checkpoint to a self-contained model package.

  export.py --checkpoint EXP_DIR/model.avg --out-dir EXP_DIR/export \
            [--decode-config conf/decode.yaml]

Writes model.pt (weights only: model, config, units, feature_config; CMVN is in the weights),
decode.yaml, units.txt, feature.yaml, metadata.json, encoder.onnx, decoder.onnx, the
incremental decoder (decoder_memory.onnx, decoder_step.onnx: key/value cache for the searches)
and int8 copies of each (*.int8.onnx: the encoder weight-only, int8 weights with float
arithmetic, so that it answers like the fp32 graph on slightly different features, e.g.
sherpa-onnx's, whose model.int8.onnx it is; the decoders dynamically quantized; the log and
metadata.json's int8_quantization say which). The fp32 graphs must match PyTorch within 1e-4
on batch sizes and lengths other than those traced, or the export fails (exit 1); the int8
graphs' differences are reported.
"""

from __future__ import annotations

import argparse
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint to export")
    p.add_argument("--out-dir", required=True, help="export directory (replaced atomically)")
    p.add_argument("--decode-config", help="decoding options (default: the checkpoint's)")
    p.add_argument("--no-quantize", action="store_true", help="skip the int8 copies")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from e2e_asr.cli import report_error
    from e2e_asr.data.features import FeatureError
    from e2e_asr.decode.config import DecodeConfigError
    from e2e_asr.export.package import ExportError, export_package
    from e2e_asr.export.parity import ParityError
    from e2e_asr.model.checkpoint import CheckpointError

    try:
        meta = export_package(a.checkpoint, a.out_dir, a.decode_config, not a.no_quantize)
    except ParityError as e:
        return report_error("export", e, label="PARITY FAILED")
    except (ExportError, CheckpointError, DecodeConfigError, FeatureError, OSError) as e:
        return report_error("export", e)
    fp32 = meta["parity_fp32"]["max_abs_diff"]
    line = f"exported {a.checkpoint} -> {a.out_dir}; fp32 max abs diff {max(fp32.values()):.2e}"
    if meta["parity_int8"]:
        q = meta["parity_int8"]
        line += (
            f"; int8 max abs diff {max(q['max_abs_diff'].values()):.2e}, "
            f"greedy identical {q['greedy_agreement']:.0%}, token error "
            f"{q['greedy_token_error']:.2f}%"
        )
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
