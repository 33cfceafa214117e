#!/usr/bin/env python3
"""Helpers of local/demo/compare_finetune.sh: per-setting training yamls, and the table.

  compare_finetune.py write-config BASE_YAML OUT_YAML [section.key=value ...]
      BASE_YAML with the overrides applied (the trainer's own --set rule and validation),
      written as a complete training yaml.

  compare_finetune.py table --out-dir DIR --setting "NAME MIX_RATIO [OVERRIDE ...]" ... \
      [--sets target_test source_test] [--reference full]
      Reads DIR/base/decode/<set>/result.json, and for each setting DIR/<name>/decode/<set>/
      result.json, DIR/<name>/stage_seconds.tsv (stage 3) and its newest checkpoint.N
      (trainable parameters = the tensors the optimizer holds moments for); writes
      DIR/COMPARE.md and DIR/compare.json and prints the table.

  compare_finetune.py render COMPARE_JSON
      The table of a compare.json as markdown (README's block is this output).

The goal checked for each setting, against the reference setting (full fine-tuning): the
source-test CER rise over the base model is at most half of the reference's, and the target
CER at most 1.1 x the reference's.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from e2e_asr.cli import report_error
from e2e_asr.model.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_model
from e2e_asr.train.config import ConfigError, apply_overrides, load_train_config

RISE_SHARE = 0.5  # goal: source-test rise at most this share of the reference's
TARGET_FACTOR = 1.1  # goal: target CER at most this factor of the reference's


def write_config(base: Path, out: Path, overrides: list[str]) -> None:
    cfg = load_train_config(base)
    if overrides:
        cfg = apply_overrides(cfg, overrides, f"{base} + {' '.join(overrides)}")
    raw = {k: v for k, v in cfg.items() if k != "data_config"}
    raw.update(cfg["data_config"])
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# {base} with: {'; '.join(overrides) or 'no changes'} (compare_finetune.py)\n"
    out.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), "utf-8")
    load_train_config(out)  # must read back as it was written


def parse_setting(text: str) -> dict[str, Any]:
    """``NAME MIX_RATIO [OVERRIDE ...]`` (whitespace-separated, as the shell script has them)."""
    fields = text.split()
    if len(fields) < 2:
        raise SystemExit(f"compare_finetune.py: setting {text!r}: expected NAME MIX_RATIO ...")
    return {"name": fields[0], "mix_ratio": float(fields[1]), "overrides": fields[2:]}


def _cer(path: Path) -> float:
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["cer"])
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"compare_finetune.py: {path}: no CER ({exc})") from exc


def _train_seconds(path: Path) -> float:
    """Stage 3 seconds (summed when the stage ran more than once, e.g. after a resume)."""
    total, seen = 0.0, False
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0] == "3-train":
                total += float(parts[1])
                seen = True
    if not seen:
        raise SystemExit(f"compare_finetune.py: {path}: no 3-train line")
    return total


def _params(exp_dir: Path) -> tuple[int, int, int]:
    """(trainable, total parameters of the plain model, last epoch) from the newest checkpoint."""
    path = latest_checkpoint(exp_dir)
    if path is None:
        raise SystemExit(f"compare_finetune.py: {exp_dir}: no checkpoint.N")
    payload = load_checkpoint(path)
    trainable = sum(
        int(s["exp_avg"].numel()) for s in payload["optimizer"]["state"].values() if "exp_avg" in s
    )
    try:
        model, _ = load_model(payload)
    except CheckpointError as exc:
        raise SystemExit(f"compare_finetune.py: {exc}") from exc
    total = sum(p.numel() for p in model.parameters())
    return trainable, total, int(payload["epoch"])


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def table(
    out_dir: Path,
    settings: list[dict[str, Any]],
    sets: list[str],
    reference: str,
    conditions: str = "",
    base_config: str = "conf/demo_finetune.yaml",
) -> int:
    base = {s: _cer(out_dir / "base" / "decode" / s / "result.json") for s in sets}
    rows = []
    for st in settings:
        exp = out_dir / st["name"]
        trainable, total, epoch = _params(exp)
        rows.append(
            {
                **st,
                "cer": {s: _cer(exp / "decode" / s / "result.json") for s in sets},
                "trainable": trainable,
                "total": total,
                "last_epoch": epoch,
                "train_seconds": _train_seconds(exp / "stage_seconds.tsv"),
            }
        )
    target, source = sets[0], sets[1]
    ref = next((r for r in rows if r["name"] == reference), None)
    for r in rows:
        r["source_rise"] = r["cer"][source] - base[source]
        r["meets_goal"] = None
        if ref is not None and r is not ref:
            ref_rise = ref["cer"][source] - base[source]
            r["meets_goal"] = bool(
                r["source_rise"] <= RISE_SHARE * max(ref_rise, 0.0)
                and r["cer"][target] <= TARGET_FACTOR * ref["cer"][target]
            )
    data = {
        "written": time.strftime("%Y-%m-%d %H:%M %Z"),
        "host": socket.gethostname(),
        "conditions": conditions,
        "base_config": base_config,
        "sets": sets,
        "base": base,
        "reference": reference,
        "settings": rows,
    }
    (out_dir / "compare.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    md = "# Fine-tuning settings compared on the demo\n\n" + render(data)
    (out_dir / "COMPARE.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def render(data: dict[str, Any]) -> str:
    """The markdown table (and what each setting is) of a ``compare.json``."""
    target, source = data["sets"]
    base, reference = data["base"], data["reference"]
    head = (
        f"| setting | trainable params | train time (s) | {target} CER | {source} CER | "
        f"{source} rise | goal |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|:---:|"]
    lines.append(f"| base model | - | - | {base[target]:.2f} | {base[source]:.2f} | - | |")
    for r in data["settings"]:
        goal = {None: "", True: "yes", False: "no"}[r["meets_goal"]]
        if r["name"] == reference:
            goal = "ref"
        share = 100 * r["trainable"] / r["total"]
        lines.append(
            f"| {r['name']} | {_fmt_params(r['trainable'])} ({share:.1f}%)"
            f" | {r['train_seconds']:.0f} | {r['cer'][target]:.2f} | {r['cer'][source]:.2f} "
            f"| {r['source_rise']:+.2f} | {goal} |"
        )
    what = [
        f"- `{r['name']}`: source mix ratio {r['mix_ratio']:g}; "
        f"{' '.join(f'`{o}`' for o in r['overrides']) or 'the training yaml as is'}"
        for r in data["settings"]
    ]
    conditions = f" {data['conditions']}." if data.get("conditions") else ""
    base_config = data.get("base_config", "conf/demo_finetune.yaml")
    return "\n".join(
        [
            f"Written by `local/demo/compare_finetune.sh` on {data['host']}, "
            f"{data['written']}.{conditions} CER in % (total edits / reference characters); "
            f"rise = CER minus the base model's; goal (against `{reference}`): {source} rise at "
            f"most {RISE_SHARE:g} x its rise and {target} CER at most {TARGET_FACTOR:g} x its "
            "CER. Train time is stage 3's wall clock on a machine that may have been shared.",
            "",
            *lines,
            "",
            f"Settings (the training yaml `{base_config}` plus):",
            "",
            *what,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-config")
    w.add_argument("base", type=Path)
    w.add_argument("out", type=Path)
    w.add_argument("overrides", nargs="*")
    t = sub.add_parser("table")
    t.add_argument("--out-dir", type=Path, required=True)
    t.add_argument(
        "--setting", action="append", required=True, help="NAME MIX_RATIO [OVERRIDE ...]"
    )
    t.add_argument("--sets", nargs=2, default=["target_test", "source_test"])
    t.add_argument("--reference", default="full")
    t.add_argument("--base-config", default="conf/demo_finetune.yaml", help="the settings' yaml")
    t.add_argument("--conditions", default="", help="how it was run (base, epochs, decoding)")
    r = sub.add_parser("render", help="print the markdown of a compare.json")
    r.add_argument("json", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "write-config":
        try:
            write_config(a.base, a.out, a.overrides)
        except ConfigError as exc:
            return report_error("compare_finetune.py", exc, label=None)
        return 0
    if a.cmd == "render":
        print(render(json.loads(a.json.read_text(encoding="utf-8"))), end="")
        return 0
    return table(
        a.out_dir,
        [parse_setting(s) for s in a.setting],
        a.sets,
        a.reference,
        a.conditions,
        a.base_config,
    )


if __name__ == "__main__":
    sys.exit(main())
