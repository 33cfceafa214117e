#!/usr/bin/env python3
"""Write the feature config a base model was trained with as YAML, so the recipe extracts the
same features for fine-tuning (a different feature type or dimension would silently ruin it);
or, with --check FEAT_CONFIG, refuse a feature config that does not fit the base model
(the project's one rule, e2e_asr.data.features.feature_mismatch: only dither may differ)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import yaml

from e2e_asr.cli import report_error
from e2e_asr.data.features import FeatureConfig, FeatureError, feature_mismatch
from e2e_asr.data.io import atomic_write_text
from e2e_asr.model.checkpoint import CheckpointError, base_model_info

PROG = "base_feature_config.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="base model checkpoint.N")
    parser.add_argument("out", type=Path, nargs="?", help="feature config YAML to write")
    parser.add_argument("--check", type=Path, metavar="FEAT_CONFIG",
                        help="only check this feature config against the base model's")  # fmt: skip
    args = parser.parse_args(argv)
    if (args.out is None) == (args.check is None):
        parser.error("give OUT (write the base model's config) or --check FEAT_CONFIG")
    try:
        _, feature_config = base_model_info(args.checkpoint)
    except CheckpointError as err:
        return report_error(PROG, err, label=None)
    if not feature_config:
        if args.check:
            print(f"{PROG}: {args.checkpoint} records no feature config; {args.check} is "
                  "used unchecked", file=sys.stderr)  # fmt: skip
            return 0
        print(f"{PROG}: {args.checkpoint} records no feature config; "
              "give the one it was trained with as --feat-config conf/<fbank|mfcc_hires>.yaml",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.check:
        try:
            diff = feature_mismatch(FeatureConfig.from_yaml(args.check), feature_config,
                                    (str(args.check), "base model"))  # fmt: skip
        except (OSError, FeatureError) as err:
            return report_error(PROG, err, label=None)
        if diff:
            print(f"{PROG}: {args.check} does not fit the features {args.checkpoint} was "
                  f"trained on ({'; '.join(diff)}); leave --feat-config empty to use the base "
                  "model's", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    atomic_write_text(args.out, yaml.safe_dump(dict(feature_config), sort_keys=False,
                                               allow_unicode=True))  # fmt: skip
    print(f"{PROG}: {args.checkpoint} uses {feature_config.get('type', '?')} "
          f"features; wrote {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
