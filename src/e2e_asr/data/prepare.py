"""Stage 0: user input → Kaldi data dir + ``rejects.tsv`` (every input key in exactly one)."""

from __future__ import annotations

import os
from pathlib import Path

from e2e_asr.data.adapters import (
    AdapterResult,
    dedupe_rejects,
    from_kaldi_dir,
    from_manifest,
    from_wav_dir,
)
from e2e_asr.data.datadir import write_data_dir
from e2e_asr.data.io import atomic_write_lines, atomic_write_text
from e2e_asr.data.validate import DataConfig, ValidationReport, validate


def make_data_dir(
    out_dir: str | os.PathLike,
    *,
    wav_dir: str | os.PathLike | None = None,
    transcript: str | os.PathLike | None = None,
    kaldi_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    config: DataConfig | None = None,
    speaker_from: str = "utt",
) -> ValidationReport:
    """Run one adapter, validate, write the data dir and ``rejects.tsv``; returns the report."""
    cfg = config or DataConfig()
    if wav_dir is not None or transcript is not None:
        if wav_dir is None or transcript is None:
            raise ValueError("--wav-dir and --transcript go together")
        found: AdapterResult = from_wav_dir(wav_dir, transcript, speaker_from)
    elif kaldi_dir is not None:
        found = from_kaldi_dir(kaldi_dir)
    elif manifest is not None:
        found = from_manifest(manifest)
    else:
        raise ValueError("give --wav-dir/--transcript, --kaldi-dir or --manifest")
    # Sorting by recording keeps a recording's segments together for the probe cache.
    cands = sorted(found.candidates, key=lambda c: (c.wav, c.key))
    report = validate(cands, cfg)
    report.rejects = dedupe_rejects([*found.rejects, *report.rejects])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_data_dir(out, report.accepted)
    atomic_write_lines(out / "rejects.tsv", (r.line() for r in report.rejects))
    atomic_write_text(out / "summary.txt", report.summary() + "\n")
    return report
