#!/usr/bin/env python3
"""Stage 1: Kaldi-exact features (lhotse) for a data dir, in nj restartable parallel jobs.

Writes DATA_DIR/feats.scp (utt ark:offset), utt2num_frames, feature.yaml and the arks under
DATA_DIR/data/. Re-running skips finished jobs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.data.feature_jobs import FeatureJobError, make_feats
from e2e_asr.data.features import FeatureConfig, FeatureError

RUNNER = Path(__file__).resolve().parent.parent / "utils" / "run.py"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, help="Kaldi data dir from stage 0")
    p.add_argument("--feat-config", required=True, help="conf/fbank.yaml or conf/mfcc_hires.yaml")
    p.add_argument("--nj", type=int, default=4, help="number of parallel jobs (default 4)")
    p.add_argument(
        "--cmd",
        default=None,
        help="job runner command string, e.g. 'utils/run.py --max-jobs-run 2' "
        "(default: utils/run.py of this repo)",
    )
    args = p.parse_args(argv)
    if args.nj < 1:
        p.error("--nj must be at least 1")
    cmd = args.cmd or f"{shlex.quote(sys.executable)} {shlex.quote(str(RUNNER))}"
    try:
        cfg = FeatureConfig.from_yaml(args.feat_config)
        n, frames = make_feats(args.data_dir, cfg, args.nj, cmd)
    except (FeatureJobError, FeatureError, FileNotFoundError) as exc:
        return report_error("make_feats.py", exc)
    hours = frames * cfg.frame_shift_ms / 1000 / 3600
    print(
        f"{n} utterances, {frames} frames ({hours:.2f} h), {cfg.type} dim {cfg.dim} -> "
        f"{args.data_dir}/feats.scp"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
