"""Writing decode results: hyp.txt, per_utt.txt, result.json (all atomic)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from e2e_asr.data.datadir import read_kv
from e2e_asr.data.io import atomic_write_lines, atomic_write_text
from e2e_asr.decode.scoring import CorpusScore, score_corpus


def read_text(path: str | os.PathLike) -> dict[str, str]:
    """A Kaldi text file; utterances with an empty transcript are allowed."""
    return read_kv(path, allow_empty_value=True)


def write_results(
    out_dir: str | os.PathLike,
    refs: dict[str, str],
    hyps: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> CorpusScore:
    """Score and write ``hyp.txt`` (Kaldi text, sorted), ``per_utt.txt`` (sclite-style
    alignment per utterance) and ``result.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    score = score_corpus(dict(sorted(refs.items())), hyps)
    atomic_write_lines(out / "hyp.txt", (f"{k} {hyps[k]}".rstrip() for k in sorted(hyps)))
    atomic_write_text(out / "per_utt.txt", score.per_utt_text())
    result = score.to_dict()
    if extra:
        result.update(extra)
    atomic_write_text(out / "result.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return score


def summary_table(dirs: list[str | os.PathLike]) -> str:
    """Markdown table of CER over models x sets from ``result.json`` files.

    A directory ``.../<set>/<model>`` gives row <set>, column <model>, unless its result.json
    names them (``set``, ``model`` keys written by steps/decode.py).
    """
    cells: dict[str, dict[str, str]] = {}
    models: list[str] = []
    for d in dirs:
        p = Path(d) / "result.json"
        try:
            r = json.loads(p.read_text(encoding="utf-8"))
            cer = float(r["cer"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: cannot read a CER ({e})") from None
        set_name = r.get("set") or Path(d).resolve().parent.name
        model = r.get("model") or Path(d).resolve().name
        if model not in models:
            models.append(model)
        cells.setdefault(set_name, {})[model] = f"{cer:.2f}"
    lines = ["| set | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for s in cells:
        lines.append(f"| {s} | " + " | ".join(cells[s].get(m, "-") for m in models) + " |")
    return "\n".join(lines)


def agreement(hyps_a: dict[str, str], hyps_b: dict[str, str]) -> tuple[int, int]:
    """(utterances with identical hypotheses, utterances in either set); a key missing on one
    side counts as a disagreement."""
    keys = set(hyps_a) | set(hyps_b)
    same = sum(1 for k in keys if k in hyps_a and k in hyps_b and hyps_a[k] == hyps_b[k])
    return same, len(keys)
