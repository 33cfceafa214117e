#!/usr/bin/env python3
"""Waveform augmentation: a data dir with the originals plus speed-perturbed (sp0.9-, sp1.1-)
and augmented (aug1-…: noise, reverb, volume, shift, resample) copies."""

from __future__ import annotations

import argparse
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.data.augment import AugmentConfig, augment_data_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, help="input data dir (stage 0)")
    p.add_argument("--out-dir", required=True, help="output data dir (copies' audio in OUT/wav)")
    p.add_argument("--config", required=True, help="conf/augment.yaml")
    args = p.parse_args(argv)
    try:
        counts = augment_data_dir(args.data_dir, args.out_dir, AugmentConfig.from_yaml(args.config))
    except (ValueError, FileNotFoundError) as exc:
        return report_error("augment_data.py", exc)
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
