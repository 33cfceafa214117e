#!/usr/bin/env python3
"""Write the feature config a base model was trained with as YAML, so the recipe extracts the
same features for fine-tuning (a different feature type or dimension would silently ruin it)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="base model checkpoint.N")
    parser.add_argument("out", type=Path, help="feature config YAML to write")
    args = parser.parse_args()
    try:
        payload = load_checkpoint(args.checkpoint)
    except CheckpointError as err:
        print(f"base_feature_config.py: {err}", file=sys.stderr)
        return 1
    feature_config = payload.get("feature_config")
    if not feature_config:
        print(f"base_feature_config.py: {args.checkpoint} records no feature config; "
              "give the one it was trained with as --feat-config conf/<fbank|mfcc_hires>.yaml",
              file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(feature_config), f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, args.out)
    print(f"base_feature_config.py: {args.checkpoint} uses {feature_config.get('type', '?')} "
          f"features; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
