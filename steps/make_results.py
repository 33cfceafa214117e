#!/usr/bin/env python3
"""Final table: CER of every decoded model on every set, plus the wall time of each stage.

Reads DECODE_DIR/<set>/<model>/result.json (written by steps/decode.py:
{"cer": percent, "wer": percent|null, "n_utts": n}), prints a markdown table (rows: sets,
columns: models) and writes EXP_DIR/RESULTS.md and EXP_DIR/results.json =
{"cer": {"<set>": {"<model>": percent}}, "stage_seconds": {"<stage>": seconds}}.
When decodes measured a hotword/phrase list (decode.py --hotwords/--phrases), a second table
gives the phrase recall, and results.json gains
"phrase_recall": {"<set>": {"<model>": {"recall": percent, "false_alarms": n, ...}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# Known models first, in pipeline order; anything else follows alphabetically.
MODEL_ORDER = ("base", "finetuned", "finetuned_hotwords", "onnx_fp32", "onnx_int8")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _order(models: set[str]) -> list[str]:
    known = [m for m in MODEL_ORDER if m in models]
    return known + sorted(models - set(MODEL_ORDER))


def collect_phrase_recall(decode_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{set: {model: hotword figures}} for the decodes that measured a phrase list."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(decode_dir.glob("*/*/result.json")):
        try:
            hot = json.loads(path.read_text(encoding="utf-8")).get("hotwords")
        except (OSError, ValueError) as exc:
            raise SystemExit(f"make_results: cannot read {path}: {exc}") from exc
        if isinstance(hot, dict) and "recall" in hot:
            out.setdefault(path.parent.parent.name, {})[path.parent.name] = hot
    return out


def render_recall(recall: dict[str, dict[str, dict[str, Any]]]) -> str:
    models = _order({m for row in recall.values() for m in row})
    lines = [
        "",
        "## Hotword phrase recall (%)",
        "",
        "Occurrences of the list's phrases in the references found in the hypotheses "
        "(false alarms: extra occurrences in the hypotheses); `*`: decoded with the list "
        "as hotwords.",
        "",
        "| set | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for set_name in sorted(recall):
        cells = []
        for m in models:
            h = recall[set_name].get(m)
            if h is None:
                cells.append("-")
                continue
            star = "*" if h.get("biased") else ""
            cells.append(
                f"{h['recall']:.1f}{star} ({h['recalled']}/{h['occurrences']}, "
                f"fa {h['false_alarms']})"
            )
        lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def collect_results(decode_dir: Path) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """({set: {model: cer}}, {set: n_utts}) from DECODE_DIR/<set>/<model>/result.json."""
    cer: dict[str, dict[str, float]] = {}
    n_utts: dict[str, int] = {}
    for path in sorted(decode_dir.glob("*/*/result.json")):
        model, set_name = path.parent.name, path.parent.parent.name
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            value = float(result["cer"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"make_results: cannot read a CER from {path}: {exc}") from exc
        cer.setdefault(set_name, {})[model] = value
        if "n_utts" in result and result["n_utts"] is not None:
            n_utts[set_name] = int(result["n_utts"])
    return cer, n_utts


def read_stage_seconds(path: Path | None) -> dict[str, float]:
    """``<stage>\\t<seconds>`` lines; a stage timed twice (a re-run) keeps the last time."""
    out: dict[str, float] = {}
    if path is None or not path.exists():
        return out
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise SystemExit(f"make_results: {path}:{lineno}: expected '<stage>\\t<seconds>'")
        try:
            out[parts[0].strip()] = float(parts[1])
        except ValueError as exc:
            raise SystemExit(f"make_results: {path}:{lineno}: bad seconds {parts[1]!r}") from exc
    return out


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def render_markdown(
    cer: dict[str, dict[str, float]], n_utts: dict[str, int], stage_seconds: dict[str, float]
) -> str:
    models = _order({m for row in cer.values() for m in row})
    lines = ["## CER (%)", ""]
    if cer:
        lines.append("| set | " + " | ".join(models) + " |")
        lines.append("|---|" + "---:|" * len(models))
        for set_name in sorted(cer):
            label = f"{set_name} ({n_utts[set_name]} utts)" if set_name in n_utts else set_name
            cells = [f"{cer[set_name][m]:.2f}" if m in cer[set_name] else "-" for m in models]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    else:
        lines.append("(no decode results found)")
    if stage_seconds:
        lines += ["", "## Wall time per stage", "", "| stage | time |", "|---|---:|"]
        for stage, secs in stage_seconds.items():
            lines.append(f"| {stage} | {_fmt_seconds(secs)} |")
        lines.append(f"| total | {_fmt_seconds(sum(stage_seconds.values()))} |")
    return "\n".join(lines) + "\n"


def make_results(
    exp_dir: Path, decode_dir: Path, stage_seconds_path: Path | None = None
) -> dict[str, Any]:
    """Write EXP_DIR/RESULTS.md and EXP_DIR/results.json; return the results dict."""
    if not decode_dir.is_dir():
        raise SystemExit(f"make_results: decode dir {decode_dir} does not exist (run stage 6)")
    cer, n_utts = collect_results(decode_dir)
    if not cer:
        raise SystemExit(f"make_results: no <set>/<model>/result.json under {decode_dir}")
    stage_seconds = read_stage_seconds(stage_seconds_path)
    results: dict[str, Any] = {"cer": cer, "stage_seconds": stage_seconds}
    markdown = render_markdown(cer, n_utts, stage_seconds)
    recall = collect_phrase_recall(decode_dir)
    if recall:
        results["phrase_recall"] = recall
        head, sep, tail = markdown.partition("\n## Wall time")
        markdown = head + render_recall(recall) + sep + tail
    _atomic_write(exp_dir / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    _atomic_write(exp_dir / "RESULTS.md", f"# Results: {exp_dir}\n\n" + markdown)
    print(markdown, end="")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp-dir", required=True, type=Path, help="writes RESULTS.md, results.json")
    p.add_argument("--decode-dir", type=Path, help="default: EXP_DIR/decode")
    p.add_argument(
        "--stage-seconds",
        type=Path,
        help="'<stage>\\t<seconds>' lines (run.sh writes EXP_DIR/stage_seconds.tsv)",
    )
    args = p.parse_args(argv)
    make_results(args.exp_dir, args.decode_dir or args.exp_dir / "decode", args.stage_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
