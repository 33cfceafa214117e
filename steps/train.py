#!/usr/bin/env python3
"""Stage 3: fine-tune (or train) the acoustic model on stage 2's json.

Single process:
  python steps/train.py --config conf/finetune.yaml --json-dir DIR \\
      --exp-dir exp/finetune --epochs 40 --base-model base/checkpoint.29
Several processes / GPUs (DDP; gloo on CPU, nccl on GPU, picked automatically):
  torchrun --standalone --nproc-per-node 2 steps/train.py ...same arguments...
Several nodes: on every node run
  torchrun --nnodes N --node-rank R --nproc-per-node G \\
      --rdzv-backend c10d --rdzv-endpoint HOST:29400 steps/train.py ...

DIR holds train.{1..json_nj}.json (listed in train_shards.txt), dev.json, units.txt, cmvn.ark,
feature.yaml (stage 2); the json is read a file at a time (memory grows with one file,
not the corpus: raise stage 2's json_nj for a large corpus), never loaded whole.
With --base-model checkpoint.N the run trains epochs N+1..--epochs and writes
EXP/checkpoint.{N+1..epochs}; EXP/snapshot every train_config.snapshot_interval updates;
EXP/train_log.jsonl, EXP/train.log, EXP/tensorboard/, EXP/train_curves.png.
--resume auto (default) continues from the newest valid snapshot/checkpoint in EXP (a
corrupt one is skipped, named in the log; state written by a run with another config, data or
base model is refused); --resume none starts over; --resume PATH continues that file.
Re-running a finished run is a no-op; Ctrl-C stops it (exit 130): re-run the same command to
resume. Mismatches between the base model and the data (feature
dim/type, units, CMVN) stop the run before the first step. Exit status 0 = done, 1 = failed
(the log names the failing rank), 2 = bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2e_asr.train.trainer import TrainArgs, run

# Shortcut flags for the settings people tune most; each is a --set section.key=value.
SHORTCUTS = {
    "factor": ("opti_config.factor", float, "Noam LR scale (seed: 1; try 0.1 or 0.01)"),
    "warm_step": ("opti_config.warm_step", int, "Noam warmup updates"),
    "accum_grad": ("train_config.accum_grad", int, "batches per optimizer update"),
    "batch_size": ("jconfig.batch_size", int, "utterances per batch (count: seq)"),
    "grad_clip": ("train_config.grad_clip", float, "gradient-norm clipping threshold"),
    "snapshot_interval": ("train_config.snapshot_interval", int, "updates between snapshots"),
    "log_interval": ("train_config.log_interval", int, "updates between log lines"),
    "num_workers": ("train_config.num_workers", int, "feature-loading worker processes"),
}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, required=True, help="training yaml (seed layout)")
    p.add_argument("--json-dir", type=Path, required=True, help="stage 2 output directory")
    p.add_argument(
        "--json-nj",
        type=int,
        default=None,
        help="number of train.N.json files (default: the list stage 2 recorded)",
    )
    p.add_argument("--exp-dir", type=Path, required=True, help="output directory")
    p.add_argument("--epochs", type=int, required=True, help="last epoch number to train")
    p.add_argument("--base-model", type=Path, default=None, help="checkpoint to fine-tune")
    p.add_argument("--units", type=Path, default=None, help="units.txt (no --base-model)")
    p.add_argument("--cmvn", type=Path, default=None, help="cmvn.ark (no --base-model)")
    p.add_argument(
        "--feature-config", type=Path, default=None, help="feature.yaml (no --base-model)"
    )
    p.add_argument("--mix-json-dir", type=Path, default=None, help="source-domain json dir")
    p.add_argument(
        "--mix-ratio",
        type=float,
        default=0.0,
        help="source utterances per epoch, as a fraction of the target train utterances",
    )
    p.add_argument("--resume", default="auto", help="auto | none | PATH of a snapshot/checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=None, help="overrides train_config.seed")
    p.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="stop after this many updates in this invocation (a snapshot is written); 0 = off",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (YAML value), e.g. --set train_config.freeze=[encoder]",
    )
    for name, (_, typ, text) in SHORTCUTS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=text)
    return p


def main(argv: list[str] | None = None) -> int:
    a = get_parser().parse_args(argv)
    overrides = list(a.overrides)
    for name, (dotted, _, _) in SHORTCUTS.items():
        value = getattr(a, name)
        if value is not None:
            overrides.append(f"{dotted}={value}")
    if a.mix_ratio < 0:
        print("--mix-ratio must be >= 0", file=sys.stderr)
        return 2
    args = TrainArgs(
        config=a.config,
        json_dir=a.json_dir,
        exp_dir=a.exp_dir,
        epochs=a.epochs,
        json_nj=a.json_nj,
        base_model=a.base_model,
        units=a.units,
        cmvn=a.cmvn,
        feature_config=a.feature_config,
        mix_json_dir=a.mix_json_dir,
        mix_ratio=a.mix_ratio,
        resume=a.resume,
        device=a.device,
        seed=a.seed,
        max_steps=a.max_steps,
        overrides=overrides,
    )
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("train.py: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
