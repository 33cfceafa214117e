#!/usr/bin/env python3
"""Final table: CER of every decoded model on every set, plus the wall time of each stage.

Reads DECODE_DIR/<set>/<model>/result.json (written by steps/decode.py:
{"cer": percent, "wer": percent|null, "n_utts": n}), prints a markdown table (rows: sets,
columns: models) and writes EXP_DIR/RESULTS.md and EXP_DIR/results.json =
{"cer": {"<set>": {"<model>": percent}}, "stage_seconds": {"<stage>": seconds}}.
When decodes measured a hotword/phrase list (decode.py --hotwords/--phrases), a second table
gives the phrase recall, and results.json gains
"phrase_recall": {"<set>": {"<model>": {"recall": percent, "false_alarms": n, ...}}}.
results.json also records "n_utts": {"<set>": n} and "measured": {"date_utc", "cpus",
"machine", "python"} (when and where the figures were measured).
``--markdown RESULTS_JSON`` prints the tables of a results.json written earlier: README's demo
figures are pasted from that output, never typed in (tests/test_demo_results.py checks it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.data.io import atomic_write_text
from e2e_asr.decode import report

_order = report.order_models


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
    dirs = [p.parent for p in sorted(decode_dir.glob("*/*/result.json"))]
    try:
        return report.collect_results(dirs)
    except ValueError as exc:
        raise SystemExit(f"make_results: {exc}") from exc


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


def measured_on() -> dict[str, Any]:
    """When and where the figures were measured (recorded in results.json)."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def measured_line(measured: dict[str, Any]) -> str:
    return (
        f"Measured {measured.get('date_utc', '?')} UTC by `run.sh` stage 6 "
        f"(steps/make_results.py) on {measured.get('cpus', '?')} CPUs "
        f"({measured.get('machine', '?')}, Python {measured.get('python', '?')})."
    )


def render_markdown(
    cer: dict[str, dict[str, float]],
    n_utts: dict[str, int],
    stage_seconds: dict[str, float],
    measured: dict[str, Any] | None = None,
    recall: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> str:
    lines = ["## CER (%)", ""]
    lines.append(report.cer_table(cer, n_utts) if cer else "(no decode results found)")
    markdown = "\n".join(lines) + "\n"
    if recall:
        markdown += render_recall(recall)
    lines = []
    if stage_seconds:
        lines += ["", "## Wall time per stage", "", "| stage | time |", "|---|---:|"]
        for stage, secs in stage_seconds.items():
            lines.append(f"| {stage} | {_fmt_seconds(secs)} |")
        lines.append(f"| total | {_fmt_seconds(sum(stage_seconds.values()))} |")
    if measured:
        lines += ["", measured_line(measured)]
    return markdown + "".join(line + "\n" for line in lines)


def render_results_json(path: Path) -> str:
    """The markdown of a results.json written earlier (README/docs figures come from here)."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        cer = results["cer"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"make_results: cannot read {path}: {exc}") from exc
    return render_markdown(
        cer,
        results.get("n_utts", {}),
        results.get("stage_seconds", {}),
        results.get("measured"),
        results.get("phrase_recall"),
    )


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
    measured = measured_on()
    results: dict[str, Any] = {
        "cer": cer,
        "n_utts": n_utts,
        "stage_seconds": stage_seconds,
        "measured": measured,
    }
    recall = collect_phrase_recall(decode_dir)
    if recall:
        results["phrase_recall"] = recall
    markdown = render_markdown(cer, n_utts, stage_seconds, measured, recall)
    atomic_write_text(
        exp_dir / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n"
    )
    atomic_write_text(exp_dir / "RESULTS.md", f"# Results: {exp_dir}\n\n" + markdown)
    print(markdown, end="")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp-dir", type=Path, help="writes RESULTS.md, results.json")
    p.add_argument(
        "--markdown",
        type=Path,
        metavar="RESULTS_JSON",
        help="only print the markdown of a results.json written earlier (README's demo table)",
    )
    p.add_argument("--decode-dir", type=Path, help="default: EXP_DIR/decode")
    p.add_argument(
        "--stage-seconds",
        type=Path,
        help="'<stage>\\t<seconds>' lines (run.sh writes EXP_DIR/stage_seconds.tsv)",
    )
    args = p.parse_args(argv)
    if args.markdown:
        print(render_results_json(args.markdown), end="")
        return 0
    if args.exp_dir is None:
        p.error("give --exp-dir (or --markdown RESULTS_JSON)")
    make_results(args.exp_dir, args.decode_dir or args.exp_dir / "decode", args.stage_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
