"""Scorer checks against hand-computed alignments."""

import pytest

from e2e_asr.decode.scoring import (
    align,
    char_units,
    edit_stats,
    format_alignment,
    score_corpus,
)


@pytest.mark.parametrize(
    ("ref", "hyp", "sdi"),
    [
        ("abc", "abc", (0, 0, 0)),
        ("abc", "axc", (1, 0, 0)),
        ("abc", "ac", (0, 1, 0)),
        ("abc", "abxc", (0, 0, 1)),
        ("abc", "", (0, 3, 0)),
        ("", "ab", (0, 0, 2)),
        # kitten -> sitting: k->s, e->i, insert g
        ("kitten", "sitting", (2, 0, 1)),
    ],
)
def test_edit_counts(ref: str, hyp: str, sdi: tuple[int, int, int]) -> None:
    s = edit_stats(list(ref), list(hyp))
    assert (s.sub, s.dele, s.ins) == sdi
    assert s.ref_units == len(ref)
    assert s.cor == len(ref) - s.sub - s.dele


def test_mandarin_alignment_pairs() -> None:
    # 今天天气好 -> 今天气很好: two edits whichever way; the diagonal is preferred on ties
    a = align(char_units("今天天气好"), char_units("今天气很好"))
    s = a.stats()
    assert s.edits == 2 and s.ref_units == 5
    assert [op for _, _, op in a.pairs] == ["C", "C", "S", "S", "C"]


def test_corpus_cer_is_total_edits_over_total_ref_not_mean() -> None:
    refs = {"u1": "ab", "u2": "abcdefgh"}
    hyps = {"u1": "", "u2": "abcdefgh"}
    score = score_corpus(refs, hyps)
    # per-utterance rates are 100% and 0%: their mean would be 50%; corpus CER is 2/10
    assert score.cer.error_rate == pytest.approx(20.0)
    d = score.to_dict()
    assert d["cer"] == pytest.approx(20.0)
    assert (d["n_utts"], d["ref_units"], d["sub"], d["del"], d["ins"]) == (2, 10, 0, 2, 0)
    assert d["wer"] is None  # no space-separated words in the references


def test_wer_when_references_have_words_and_spaces_ignored_for_cer() -> None:
    refs = {"a": "the cat sat", "b": "on the mat"}
    hyps = {"a": "the cat sat", "b": "on a mat"}
    score = score_corpus(refs, hyps)
    assert score.wer is not None
    assert score.wer.error_rate == pytest.approx(100.0 / 6)
    # chars: "onthemat" vs "onamat": t->a, delete h, delete e (or an equivalent 3-edit path)
    assert score.cer.edits == 3
    assert score.cer.ref_units == len("thecatsat") + len("onthemat")


def test_missing_hypothesis_counts_as_empty() -> None:
    score = score_corpus({"a": "你好", "b": "再见"}, {"a": "你好"})
    assert score.missing == ["b"]
    assert score.cer.dele == 2 and score.cer.error_rate == pytest.approx(50.0)


def test_sclite_block() -> None:
    block = format_alignment("utt1", align(list("abc"), list("xbcd")))
    lines = block.splitlines()
    assert lines[0] == "id: (utt1)"
    assert lines[1] == "Scores: (#C #S #D #I) 2 1 0 1"
    assert lines[2] == "REF:  A b c *"
    assert lines[3] == "HYP:  X b c D"
    assert lines[4] == "Eval: S     I"


def test_agreement() -> None:
    from e2e_asr.decode.report import agreement

    assert agreement({"a": "x", "b": "y", "c": "z"}, {"a": "x", "b": "q"}) == (1, 3)
