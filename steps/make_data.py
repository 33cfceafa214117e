#!/usr/bin/env python3
"""Stage 0: make a Kaldi data dir (wav.scp text utt2spk spk2utt [segments]) and rejects.tsv."""

from __future__ import annotations

import argparse
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.data.prepare import make_data_dir
from e2e_asr.data.validate import DataConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", required=True, help="data dir to write")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--wav-dir", help="folder searched recursively for .wav/.flac")
    src.add_argument(
        "--transcript", help="'<key> <text>' (AISHELL) or '<rel/path.wav>\\t<text>' (PPASR) lines"
    )
    src.add_argument(
        "--kaldi-dir", help="existing Kaldi data dir (wav.scp, text, [utt2spk, segments])"
    )
    src.add_argument("--manifest", help="JSON lines with audio_filepath, text[, duration]")
    p.add_argument(
        "--config", default=None, help="data config yaml (default: built-in, see conf/data.yaml)"
    )
    p.add_argument(
        "--speaker-from",
        choices=("utt", "dir"),
        default="utt",
        help="speaker id: the utterance itself, or the audio file's folder name (AISHELL)",
    )
    args = p.parse_args(argv)
    given = sum(
        x is not None for x in (args.wav_dir or args.transcript, args.kaldi_dir, args.manifest)
    )
    if given != 1:
        p.error("give exactly one of --wav-dir/--transcript, --kaldi-dir, --manifest")
    try:
        report = make_data_dir(
            args.out_dir,
            wav_dir=args.wav_dir,
            transcript=args.transcript,
            kaldi_dir=args.kaldi_dir,
            manifest=args.manifest,
            config=DataConfig.from_yaml(args.config),
            speaker_from=args.speaker_from,
        )
    except (FileNotFoundError, ValueError) as exc:
        return report_error("make_data.py", exc)
    print(report.summary())
    bad_enc = report.rejects["non_utf8"]
    if bad_enc and bad_enc * 2 >= sum(report.rejects.values()) + report.accepted:
        print(
            "make_data.py: most transcript lines are not UTF-8; if the file is GBK, convert it: "
            "iconv -f GBK -t UTF-8 IN > OUT",
            file=sys.stderr,
        )
    if not report.accepted:
        print(
            f"make_data.py: error: no utterance accepted; see {args.out_dir}/rejects.tsv",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
