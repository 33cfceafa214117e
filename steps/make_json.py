#!/usr/bin/env python3
"""Stage 2: global CMVN, tokenisation, train/dev split and ESPnet1 json.

Writes OUT/train.{1..N}.json, dev.json, cmvn.ark, units.txt, feature.yaml and oov.txt. The OOV
report (characters not in the units, with counts) is printed first.
"""

from __future__ import annotations

import argparse
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.data.jsonprep import JsonPrepError, prepare_json
from e2e_asr.data.units import UnitsError, read_units
from e2e_asr.model.checkpoint import CheckpointError, base_model_info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, help="data dir with feats.scp (stage 1)")
    p.add_argument(
        "--out-dir", required=True, help="e.g. ${output_dir}/preparejson/split_train_dev"
    )
    units = p.add_mutually_exclusive_group(required=True)
    units.add_argument("--base-model", help="checkpoint whose 'units' are used")
    units.add_argument("--units", help="units.txt (for a model trained from scratch)")
    p.add_argument("--json-nj", type=int, required=True, help="number of train json files")
    p.add_argument(
        "--num-utt-percent",
        type=int,
        required=True,
        help="1 in P original utterances goes to dev (ignored with --dev-data-dir)",
    )
    p.add_argument(
        "--dev-data-dir", default=None, help="use this data dir as dev instead of a split"
    )
    p.add_argument(
        "--config",
        default=None,
        help="training yaml; its set_config.jconfig (or jconfig) / valid_config.jconfig "
        "give clean_data ilen_min ilen_max olen_max (default: the seed's 17/2000/100)",
    )
    p.add_argument(
        "--extend-units",
        action="store_true",
        help="append OOV characters as new units before <sos/eos> instead of <unk>",
    )
    args = p.parse_args(argv)
    try:
        model_feats = None
        if args.base_model:
            unit_list, model_feats = base_model_info(args.base_model)
        else:
            unit_list = read_units(args.units)
        prepare_json(
            args.data_dir,
            args.out_dir,
            unit_list,
            args.json_nj,
            args.num_utt_percent,
            dev_data_dir=args.dev_data_dir,
            config=args.config,
            extend=args.extend_units,
            model_feature_config=model_feats,
            log=lambda s: print(s, flush=True),
        )
    except (JsonPrepError, CheckpointError, UnitsError, FileNotFoundError, ValueError) as exc:
        return report_error("make_json.py", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
