#!/usr/bin/env python3
"""Score Kaldi text files, or tabulate decode results.

score.py --ref TEXT --hyp TEXT [--out-dir DIR]
    corpus CER (total edits / total reference characters; <unk> and other <...> symbols are
    one character), WER only when both references and hypotheses have space-separated words
    (otherwise result.json says why it is null); with --out-dir writes hyp.txt, per_utt.txt
    and result.json.
score.py --table DIR1 DIR2 ...
    markdown table of CER, rows = sets, columns = models, from DIR*/result.json.
score.py --agree DIR_A DIR_B [--min-agree PERCENT]
    share of utterances whose hyp.txt lines are identical; exits 1 (printing the numbers)
    when it is below PERCENT (default 99).
"""

from __future__ import annotations

import argparse
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ref", help="reference Kaldi text")
    p.add_argument("--hyp", help="hypothesis Kaldi text")
    p.add_argument("--out-dir", help="write hyp.txt, per_utt.txt, result.json here")
    p.add_argument("--table", nargs="+", metavar="DIR", help="decode dirs with result.json")
    p.add_argument("--agree", nargs=2, metavar="DIR", help="compare two decode dirs' hyp.txt")
    p.add_argument(
        "--min-agree",
        type=float,
        default=None,
        metavar="PERCENT",
        help="with --agree: fail below this share of identical hypotheses (default 99)",
    )
    a = p.parse_args(argv)

    from e2e_asr.cli import report_error
    from e2e_asr.data.datadir import DataDirError
    from e2e_asr.decode.report import (
        AGREE_MIN_PERCENT,
        check_agreement,
        read_text,
        summary_table,
        write_results,
    )
    from e2e_asr.decode.scoring import score_corpus

    if a.agree:
        try:
            ha, hb = (read_text(f"{d}/hyp.txt") for d in a.agree)
        except (DataDirError, OSError) as e:
            return report_error("score", e)
        threshold = AGREE_MIN_PERCENT if a.min_agree is None else a.min_agree
        ok, line = check_agreement(ha, hb, threshold)
        print(f"{a.agree[0]} vs {a.agree[1]}: {line}", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1

    if a.table:
        if a.ref or a.hyp:
            p.error("--table cannot be combined with --ref/--hyp")
        try:
            print(summary_table(a.table))
        except ValueError as e:
            return report_error("score", e)
        return 0
    if not (a.ref and a.hyp):
        p.error("give --ref and --hyp, or --table DIR...")
    try:
        refs, hyps = read_text(a.ref), read_text(a.hyp)
    except (DataDirError, OSError) as e:
        return report_error("score", e)
    score = write_results(a.out_dir, refs, hyps) if a.out_dir else score_corpus(refs, hyps)
    if score.extra:
        print(
            f"score: {len(score.extra)} hypotheses have no reference (not scored)", file=sys.stderr
        )
    print(score.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
