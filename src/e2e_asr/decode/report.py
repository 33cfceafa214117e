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


# Known models first, in pipeline order; anything else follows alphabetically.
MODEL_ORDER = ("base", "finetuned", "finetuned_hotwords", "onnx_fp32", "onnx_int8")


def order_models(models: set[str]) -> list[str]:
    known = [m for m in MODEL_ORDER if m in models]
    return known + sorted(models - set(MODEL_ORDER))


def cer_table(cer: dict[str, dict[str, float]], n_utts: dict[str, int] | None = None) -> str:
    """THE CER table (markdown): rows = sets (sorted, ``set (N utts)`` when known), columns =
    models (``MODEL_ORDER`` first), cells = CER in % with two decimals, ``-`` where missing."""
    n_utts = n_utts or {}
    models = order_models({m for row in cer.values() for m in row})
    lines = ["| set | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for set_name in sorted(cer):
        label = f"{set_name} ({n_utts[set_name]} utts)" if set_name in n_utts else set_name
        cells = [f"{cer[set_name][m]:.2f}" if m in cer[set_name] else "-" for m in models]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_result(decode_dir: str | os.PathLike) -> dict[str, Any]:
    """``result.json`` of one decode dir; a missing or unreadable CER raises ValueError."""
    p = Path(decode_dir) / "result.json"
    try:
        r = json.loads(p.read_text(encoding="utf-8"))
        r["cer"] = float(r["cer"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: cannot read a CER ({e})") from None
    return r


def collect_results(
    dirs: list[str | os.PathLike],
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """``({set: {model: cer}}, {set: n_utts})`` from decode dirs ``.../<set>/<model>`` (or the
    ``set``/``model`` keys their result.json records)."""
    cer: dict[str, dict[str, float]] = {}
    n_utts: dict[str, int] = {}
    for d in dirs:
        r = read_result(d)
        set_name = r.get("set") or Path(d).resolve().parent.name
        model = r.get("model") or Path(d).resolve().name
        cer.setdefault(set_name, {})[model] = r["cer"]
        if r.get("n_utts") is not None:
            n_utts[set_name] = int(r["n_utts"])
    return cer, n_utts


def summary_table(dirs: list[str | os.PathLike]) -> str:
    """The CER table (``cer_table``) of the given decode dirs."""
    return cer_table(*collect_results(dirs))


def agreement(hyps_a: dict[str, str], hyps_b: dict[str, str]) -> tuple[int, int]:
    """(utterances with identical hypotheses, utterances in either set); a key missing on one
    side counts as a disagreement."""
    keys = set(hyps_a) | set(hyps_b)
    same = sum(1 for k in keys if k in hyps_a and k in hyps_b and hyps_a[k] == hyps_b[k])
    return same, len(keys)


AGREE_MIN_PERCENT = 99.0  # run.sh stage 6: ONNX must give PyTorch's hypothesis this often


def check_agreement(
    hyps_a: dict[str, str], hyps_b: dict[str, str], min_percent: float = AGREE_MIN_PERCENT
) -> tuple[bool, str]:
    """(holds, one line with the numbers): identical hypotheses on >= ``min_percent`` %."""
    same, n = agreement(hyps_a, hyps_b)
    pct = 100.0 * same / n if n else 0.0
    ok = n > 0 and pct >= min_percent
    verdict = "ok" if ok else "FAILED"
    return ok, (
        f"identical hypotheses: {same}/{n} ({pct:.2f}%); required >= {min_percent:g}%: {verdict}"
    )
