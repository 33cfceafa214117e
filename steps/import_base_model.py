#!/usr/bin/env python3
"""Convert an ESPnet1, ESPnet2 or WeNet Transformer/Conformer model into this project's
checkpoint, for `run.sh --base-model OUT_DIR/checkpoint.N`.

  steps/import_base_model.py SRC OUT_DIR [--cmvn cmvn.ark] [--units units.txt] [--epoch N]

SRC is the weights file: ESPnet1 `model.acc.best` / `snapshot.ep.N` (model.json beside it),
ESPnet2 `*.pth` (config.yaml beside it), WeNet `*.pt` (train.yaml, units.txt, global_cmvn
beside it). Writes OUT_DIR/checkpoint.N, OUT_DIR/units.txt and OUT_DIR/import_report.tsv
(one row per weight: mapped, renamed, converted, dropped or added) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import torch

from e2e_asr.cli import report_error
from e2e_asr.data.units import write_units
from e2e_asr.model.checkpoint import save_checkpoint
from e2e_asr.model.importers import FORMATS, BaseModelImportError, import_base_model
from e2e_asr.model.importers.common import format_table, write_report
from e2e_asr.train.config import ConfigError, normalize_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("src", help="weights file of the source model")
    p.add_argument("out_dir", help="directory for checkpoint.N, units.txt, import_report.tsv")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    p.add_argument("--cmvn", help="ESPnet1: the recipe's cmvn.ark; WeNet: global_cmvn")
    p.add_argument("--units", help="WeNet: units.txt (default: found beside SRC)")
    p.add_argument("--config", help="model.json / config.yaml / train.yaml if not beside SRC")
    p.add_argument(
        "--feature-config", help="feature yaml the model was trained on (default: from SRC)"
    )
    p.add_argument(
        "--epoch", type=int, help="N of checkpoint.N (default: the source's epoch, else 0)"
    )
    p.add_argument("--quiet", action="store_true", help="print the summary, not every key")
    args = p.parse_args(argv)
    try:
        result = import_base_model(
            args.src,
            args.format,
            cmvn=args.cmvn,
            units=args.units,
            config=args.config,
            feature_config=args.feature_config,
            epoch=args.epoch,
        )
        config = normalize_config(
            {
                "model_config": result.model_config,
                "criterion_config": result.criterion_config,
                # Noam's scale is model_size ** -0.5: the imported model's width
                "opti_config": {"model_size": result.model_config["encoder_attention_dim"]},
            },
            f"config converted from {args.src}",
        )
        model = result.build()
    except (BaseModelImportError, ConfigError) as e:
        return report_error("import_base_model.py", e)
    # A forward pass on noise: catches NaN/inf weights before a training run does.
    with torch.no_grad():
        idim = result.model_config["idim"]
        enc, _ = model.encode(torch.randn(1, 200, idim), torch.tensor([200]))
        if not torch.isfinite(model.ctc_log_probs(enc)).all():
            print(f"import_base_model.py: error: {args.src}: non-finite outputs", file=sys.stderr)
            return 1
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": result.state_dict,
        "config": config,
        "units": result.units,
        "feature_config": result.feature_config,
        "epoch": result.epoch,
        "step": 0,
        "import_info": {
            "format": result.fmt,
            "architecture": result.architecture,
            "sources": [str(Path(s).resolve()) for s in result.sources],
            "warnings": list(result.warnings),
        },
    }
    ckpt = out / f"checkpoint.{result.epoch}"
    save_checkpoint(ckpt, payload)
    write_units(out / "units.txt", result.units)
    write_report(out / "import_report.tsv", result.rows)
    if not args.quiet:
        print(format_table(result.rows))
    counts = ", ".join(f"{n} {a}" for a, n in sorted(result.counts().items()))
    print(
        f"imported {result.fmt} {result.architecture} ({len(result.units)} units, "
        f"{result.feature_config['type']} {result.feature_config['dim']}-dim): {counts}"
    )
    for w in result.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    print(f"wrote {ckpt} (use: ./run.sh --base-model {ckpt}), {out / 'import_report.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
