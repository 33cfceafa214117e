"""Edit-distance scoring: corpus CER/WER and sclite-style per-utterance alignments.

Corpus error rates are total edits / total reference units over the whole set, never the mean
of per-utterance rates (a short utterance with one error would otherwise weigh as much as a
long one).

CER units are characters, except that a bracketed symbol such as ``<unk>`` or ``<noise>`` is
ONE unit (a hypothesis ``<unk>`` is one error, not five). ``cer_stats`` is the one CER rule:
stage 6 and the training-time dev CER both count with it. WER is scored only when both the
references and the hypotheses carry word boundaries (spaces); a character-unit model's output
has none, so WER is then not reported rather than reported as ~100%.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Alignment operations.
COR, SUB, DEL, INS = "C", "S", "D", "I"


@dataclass
class EditStats:
    """Counts of an alignment (or of a sum of alignments)."""

    ref_units: int = 0
    cor: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    n_utts: int = 0
    n_err_utts: int = 0

    @property
    def edits(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def error_rate(self) -> float:
        """Edits per reference unit, in percent. With an empty reference the rate is 0 when
        the hypothesis is empty too and 100 otherwise (the ratio is undefined)."""
        if self.ref_units == 0:
            return 0.0 if self.edits == 0 else 100.0
        return 100.0 * self.edits / self.ref_units

    def add(self, other: EditStats) -> None:
        self.ref_units += other.ref_units
        self.cor += other.cor
        self.sub += other.sub
        self.dele += other.dele
        self.ins += other.ins
        self.n_utts += other.n_utts
        self.n_err_utts += other.n_err_utts


@dataclass
class Alignment:
    """A minimal-edit alignment: pairs (ref unit or None, hyp unit or None, op)."""

    pairs: list[tuple[str | None, str | None, str]] = field(default_factory=list)

    def stats(self) -> EditStats:
        s = EditStats(n_utts=1)
        for _, _, op in self.pairs:
            if op == COR:
                s.cor += 1
            elif op == SUB:
                s.sub += 1
            elif op == DEL:
                s.dele += 1
            else:
                s.ins += 1
        s.ref_units = s.cor + s.sub + s.dele
        s.n_err_utts = int(s.edits > 0)
        return s


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Levenshtein alignment of two unit sequences with unit costs.

    Among alignments with the minimal number of edits, the backtrace prefers a match or
    substitution over a deletion over an insertion, so results are deterministic.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j] = edits to turn ref[:i] into hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        ri = ref[i - 1]
        row, prev = cost[i], cost[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if ri == hyp[j - 1] else 1)
            row[j] = min(diag, prev[j] + 1, row[j - 1] + 1)
    pairs: list[tuple[str | None, str | None, str]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = ref[i - 1] == hyp[j - 1]
            if cost[i][j] == cost[i - 1][j - 1] + (0 if same else 1):
                pairs.append((ref[i - 1], hyp[j - 1], COR if same else SUB))
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((ref[i - 1], None, DEL))
            i -= 1
        else:
            pairs.append((None, hyp[j - 1], INS))
            j -= 1
    pairs.reverse()
    return Alignment(pairs)


def edit_stats(ref: Sequence[str], hyp: Sequence[str]) -> EditStats:
    return align(ref, hyp).stats()


_CHAR_UNIT_RE = re.compile(r"<[^<>\s]+>|\S")


def char_units(text: str) -> list[str]:
    """CER units: every non-whitespace character; a ``<...>`` symbol (``<unk>``) is one unit."""
    return _CHAR_UNIT_RE.findall(text)


def cer_stats(ref: str, hyp: str) -> EditStats:
    """Edit counts of one utterance on CER units: the rule every CER in the project uses."""
    return edit_stats(char_units(ref), char_units(hyp))


def word_units(text: str) -> list[str]:
    """WER units: whitespace-separated words."""
    return text.split()


def _width(s: str) -> int:
    # CJK characters take two terminal columns; pad by display width so columns line up.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _pad(s: str, width: int) -> str:
    return s + " " * (width - _width(s))


def format_alignment(key: str, alignment: Alignment) -> str:
    """An sclite-style block: id, Scores (#C #S #D #I), REF, HYP and Eval lines."""
    s = alignment.stats()
    ref_cols, hyp_cols, eval_cols = [], [], []
    for r, h, op in alignment.pairs:
        r_txt = r if r is not None else "*" * max(1, _width(h or ""))
        h_txt = h if h is not None else "*" * max(1, _width(r or ""))
        if op != COR:
            # sclite shows errors in upper case; harmless for CJK
            r_txt, h_txt = r_txt.upper(), h_txt.upper()
        w = max(_width(r_txt), _width(h_txt), 1)
        ref_cols.append(_pad(r_txt, w))
        hyp_cols.append(_pad(h_txt, w))
        eval_cols.append(_pad("" if op == COR else op, w))
    lines = [
        f"id: ({key})",
        f"Scores: (#C #S #D #I) {s.cor} {s.sub} {s.dele} {s.ins}",
        f"REF:  {' '.join(ref_cols)}",
        f"HYP:  {' '.join(hyp_cols)}",
        f"Eval: {' '.join(eval_cols)}",
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def has_words(texts: Iterable[str]) -> bool:
    """True when some text has more than one space-separated word, i.e. it carries word
    boundaries (unsegmented Mandarin has none)."""
    return any(len(t.split()) > 1 for t in texts)


WER_NO_REF_WORDS = "not scored: the references carry no word boundaries"
WER_NO_HYP_WORDS = "not scored: the hypotheses carry no word boundaries (character units)"


@dataclass
class CorpusScore:
    """Scores of a hypothesis set against references, keyed by utterance."""

    cer: EditStats
    wer: EditStats | None
    per_utt: list[tuple[str, Alignment]]
    missing: list[str]  # reference keys with no hypothesis (scored as empty hypotheses)
    extra: list[str]  # hypothesis keys with no reference (not scored)
    wer_note: str = ""  # why WER is None

    def to_dict(self) -> dict:
        c = self.cer
        return {
            "cer": round(c.error_rate, 4),
            "wer": None if self.wer is None else round(self.wer.error_rate, 4),
            **({"wer_note": self.wer_note} if self.wer is None and self.wer_note else {}),
            "n_utts": c.n_utts,
            "ref_units": c.ref_units,
            "sub": c.sub,
            "del": c.dele,
            "ins": c.ins,
            "sentence_error_rate": round(100.0 * c.n_err_utts / max(c.n_utts, 1), 4),
            "ref_words": None if self.wer is None else self.wer.ref_units,
            "word_edits": None if self.wer is None else self.wer.edits,
            "missing_hyps": len(self.missing),
        }

    def summary(self) -> str:
        c = self.cer
        line = (
            f"CER {c.error_rate:.2f}% [ {c.edits} / {c.ref_units}, "
            f"{c.sub} sub, {c.dele} del, {c.ins} ins ] over {c.n_utts} utterances"
        )
        if self.wer is not None:
            line += f"; WER {self.wer.error_rate:.2f}% [ {self.wer.edits} / {self.wer.ref_units} ]"
        elif self.wer_note == WER_NO_HYP_WORDS:
            line += "; WER not scored (the hypotheses carry no word boundaries)"
        if self.missing:
            line += f"; {len(self.missing)} utterances without hypothesis scored as empty"
        return line

    def per_utt_text(self) -> str:
        return "\n".join(format_alignment(k, a) for k, a in self.per_utt)


def score_corpus(refs: dict[str, str], hyps: dict[str, str]) -> CorpusScore:
    """Score every reference utterance; a missing hypothesis counts as empty (all deletions)
    so that a decoder that drops utterances cannot look better than one that does not."""
    cer = EditStats()
    per_utt: list[tuple[str, Alignment]] = []
    missing = [k for k in refs if k not in hyps]
    extra = [k for k in hyps if k not in refs]
    wer_note = ""
    if not has_words(refs.values()):
        wer_note = WER_NO_REF_WORDS
    elif not has_words(hyps[k] for k in refs if k in hyps):
        wer_note = WER_NO_HYP_WORDS
    wer = None if wer_note else EditStats()
    for key, ref in refs.items():
        hyp = hyps.get(key, "")
        a = align(char_units(ref), char_units(hyp))
        cer.add(a.stats())
        per_utt.append((key, a))
        if wer is not None:
            wer.add(edit_stats(word_units(ref), word_units(hyp)))
    return CorpusScore(
        cer=cer, wer=wer, per_utt=per_utt, missing=missing, extra=extra, wer_note=wer_note
    )
