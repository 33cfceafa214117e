"""Stage 0: user input → Kaldi data dir + ``rejects.tsv`` (every input key in exactly one)."""

from __future__ import annotations

import os
from pathlib import Path

from e2e_asr.data.adapters import Reject, from_kaldi_dir, from_manifest, from_wav_dir
from e2e_asr.data.datadir import DataDirWriter
from e2e_asr.data.io import atomic_write_lines, atomic_write_text
from e2e_asr.data.keystore import CHUNK, KeyStore
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
    """Run one adapter, validate, write the data dir and ``rejects.tsv``; returns the report.

    Streaming throughout: keys are paired and sorted in an on-disk SQLite file.
    """
    cfg = config or DataConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # left by a killed run: its key store (as large as the corpus' keys) and temp files
    for p in [*out.glob(".stage0.*.sqlite"), *out.glob(".*.tmp")]:
        p.unlink(missing_ok=True)
    report = ValidationReport()
    with KeyStore(out) as store:
        segmented = False
        if wav_dir is not None or transcript is not None:
            if wav_dir is None or transcript is None:
                raise ValueError("--wav-dir and --transcript go together")
            items = from_wav_dir(wav_dir, transcript, store, speaker_from)
        elif kaldi_dir is not None:
            items = from_kaldi_dir(kaldi_dir, store)
            segmented = (Path(kaldi_dir) / "segments").is_file()
        elif manifest is not None:
            items = from_manifest(manifest, store)
        else:
            raise ValueError("give --wav-dir/--transcript, --kaldi-dir or --manifest")
        store.create("rej", "key TEXT, seq INTEGER, line TEXT, reason TEXT")
        pending: list[tuple] = []
        seq = 0
        with DataDirWriter(out, segmented, store) as writer:
            for item in validate(items, cfg, report.converted):
                if isinstance(item, Reject):
                    pending.append((item.key, seq, item.line(), item.reason))
                    seq += 1
                    if len(pending) >= CHUNK:
                        store.insert("rej", pending)
                        pending = []
                else:
                    writer.add(item)
            store.insert("rej", pending)
            report.accepted = writer.count

        def reject_lines():
            # one line per key, the first reason found, sorted by key
            for line, reason, _ in store.query(
                "SELECT line, reason, min(seq) FROM rej GROUP BY key ORDER BY key"
            ):
                report.rejects[reason] += 1
                yield line

        atomic_write_lines(out / "rejects.tsv", reject_lines())
    atomic_write_text(out / "summary.txt", report.summary() + "\n")
    return report
