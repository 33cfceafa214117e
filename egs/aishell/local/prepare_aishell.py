#!/usr/bin/env python3
"""Split AISHELL-1's single transcript into one transcript per set (train, dev, test).

AISHELL-1 is distributed as data_aishell/wav/{train,dev,test}/<spk>/<utt>.wav (or as one
<spk>.tar.gz per speaker under data_aishell/wav/, extracted here) and
data_aishell/transcript/aishell_transcript_v0.8.txt with word-segmented `<utt> <text>` lines.
Each transcript line goes to the set holding its audio; a line with no audio in any set goes to
train, where stage 0 reports it as `no_audio`, so every key is accounted for.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.data.adapters import find_audio
from e2e_asr.data.io import atomic_open, atomic_write_text

SETS = ("train", "dev", "test")
TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"


def extract_tarballs(wav_root: Path) -> int:
    """Extract <spk>.tar.gz files (the distributed form) once; returns how many were extracted."""
    n = 0
    for tgz in sorted(wav_root.glob("*.tar.gz")):
        done = tgz.with_name(tgz.name + ".extracted")
        if done.exists():
            continue
        with tarfile.open(tgz) as tar:
            tar.extractall(wav_root, filter="data")
        atomic_write_text(done, "")
        n += 1
    return n


def split_transcript(corpus: Path, out_dir: Path) -> dict[str, int]:
    wav_root = corpus / "wav"
    if not wav_root.is_dir():
        raise FileNotFoundError(f"{wav_root} not found (expected data_aishell/wav/)")
    extracted = extract_tarballs(wav_root)
    if extracted:
        print(f"extracted {extracted} speaker archives under {wav_root}")
    where: dict[str, str] = {}
    for s in SETS:
        if not (wav_root / s).is_dir():
            raise FileNotFoundError(f"{wav_root / s} not found")
        for p in find_audio(wav_root / s):
            where.setdefault(p.stem, s)  # a key in two sets is reported by stage 0 of the first
    transcript = corpus / TRANSCRIPT
    if not transcript.is_file():
        raise FileNotFoundError(f"{transcript} not found")
    counts = dict.fromkeys(SETS, 0)
    handles = {}
    try:
        for s in SETS:
            ctx = atomic_open(out_dir / s / "transcript.txt", "wb")
            handles[s] = (ctx, ctx.__enter__())
        with open(transcript, "rb") as fh:  # bytes: a bad line is passed on, not dropped
            for raw in fh:
                if not raw.strip():
                    continue
                key = raw.split(None, 1)[0].decode("utf-8", "replace")
                s = where.get(key, "train")
                handles[s][1].write(raw if raw.endswith(b"\n") else raw + b"\n")
                counts[s] += 1
    except BaseException as exc:
        for ctx, _ in handles.values():
            ctx.__exit__(type(exc), exc, None)
        raise
    for ctx, _ in handles.values():
        ctx.__exit__(None, None, None)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus-dir", required=True, help="the data_aishell folder")
    p.add_argument("--out-dir", required=True, help="writes OUT/{train,dev,test}/transcript.txt")
    args = p.parse_args(argv)
    try:
        counts = split_transcript(Path(args.corpus_dir), Path(args.out_dir))
    except FileNotFoundError as exc:
        return report_error("prepare_aishell.py", exc)
    print("transcript lines: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
