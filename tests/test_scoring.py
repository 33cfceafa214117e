"""Scorer checks against hand-computed alignments."""

import pytest

from e2e_asr.decode.scoring import (
    WER_NO_HYP_WORDS,
    WER_NO_REF_WORDS,
    align,
    cer_stats,
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
    assert d["wer_note"] == WER_NO_REF_WORDS


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


def test_unk_and_bracketed_symbols_are_one_unit() -> None:
    assert char_units("你<unk>好 <noise>a") == ["你", "<unk>", "好", "<noise>", "a"]
    # the reference character the model does not know, decoded as <unk>: ONE substitution
    s = cer_stats("今天天气好", "今天<unk>气好")
    assert (s.sub, s.dele, s.ins, s.ref_units) == (1, 0, 0, 5)
    # a lone "<" or ">" is an ordinary character
    assert char_units("a<b>") == ["a", "<b>"] and char_units("a < b") == ["a", "<", "b"]
    score = score_corpus({"u": "天 气 好"}, {"u": "<unk>气好"})
    assert score.cer.edits == 1 and score.cer.error_rate == pytest.approx(100.0 / 3)


def test_wer_only_when_hypotheses_carry_word_boundaries_too() -> None:
    # AISHELL-style references are word-segmented; a character model's output is not:
    # WER would be ~100% for no reason, so it is not reported, and the reason is written
    refs = {"a": "今天 天气 很好", "b": "我们 出去 走走"}
    hyps = {"a": "今天天气很好", "b": "我们出去走走"}
    score = score_corpus(refs, hyps)
    assert score.wer is None and score.cer.edits == 0
    d = score.to_dict()
    assert d["wer"] is None and d["wer_note"] == WER_NO_HYP_WORDS
    assert "WER not scored" in score.summary()
    # both segmented: WER is scored
    both = score_corpus(refs, {"a": "今天 天气 很好", "b": "我们 出去 走"})
    assert both.wer is not None and both.wer.edits == 1 and both.wer.ref_units == 6
    assert "wer_note" not in both.to_dict()


def test_training_dev_cer_equals_stage6_cer_on_the_same_model_and_features(tmp_path) -> None:
    """The dev CER printed during training and stage 6's CER count with one rule: the same
    model on the same features gives the same figure, with an OOV reference character (it is
    <unk> in the json's token ids) and <unk> in the hypotheses."""
    import json

    import kaldiio
    import numpy as np
    import torch
    from decode_fixtures import UNITS, tiny_model, write_checkpoint

    from e2e_asr.data.loader import BatchDataset
    from e2e_asr.data.units import Tokenizer
    from e2e_asr.decode.recognizer import Recognizer
    from e2e_asr.train.distributed import DistInfo
    from e2e_asr.train.validation import validate

    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    tok = Tokenizer(UNITS)
    texts = {"u1": "一二三 四五", "u2": "六七X八", "u3": "九十 百千万亿零"}  # X: not a unit
    utts, feats = {}, {}
    ark = tmp_path / "feats.ark"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{tmp_path / 'feats.scp'}") as w:
        for i, key in enumerate(texts):
            feats[key] = (rng.standard_normal((60 + 25 * i, 20)) * 2 + 8).astype(np.float32)
            w(key, feats[key])
    scp = dict(line.split() for line in (tmp_path / "feats.scp").read_text().splitlines())
    for key, text in texts.items():
        ids = tok.encode(text)
        utts[key] = {
            "input": [{"feat": scp[key], "name": "input1", "shape": list(feats[key].shape)}],
            "output": [{"name": "target1", "text": text, "tokenid": " ".join(map(str, ids))}],
        }
    assert tok.unk_id in tok.encode(texts["u2"])
    json.dumps(utts)  # a json-able entry, as stage 2 writes it

    model = tiny_model(0)
    dev = BatchDataset(utts, [["u1", "u2"], ["u3"]])
    got = validate(model, (dev[i] for i in range(len(dev))), UNITS, DistInfo())

    rec = Recognizer.from_checkpoint(write_checkpoint(tmp_path / "checkpoint.1"), mode="ctc_greedy")
    ids = rec.decode_features(list(feats.items()))
    hyps = {k: rec.text(h) for k, h in zip(feats, ids, strict=True)}
    stage6 = score_corpus(texts, hyps)
    assert stage6.cer.ref_units == 16  # characters, word spaces not counted, X counted
    assert got["dev_cer"] == pytest.approx(stage6.cer.error_rate, abs=1e-9)


def _hyps(d, lines: list[str]):
    d.mkdir(parents=True)
    (d / "hyp.txt").write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
    return str(d)


def test_score_agree_fails_below_the_threshold_with_the_numbers(tmp_path, capsys) -> None:
    """run.sh stage 6: ONNX must give PyTorch's hypothesis on >= 99% of utterances."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "steps"))
    import score

    same = [f"u{i:03d} 你好" for i in range(200)]
    a = _hyps(tmp_path / "torch", same)
    b = _hyps(tmp_path / "onnx_ok", same[:198] + ["u198 你", "u199 你好"])  # 199/200 = 99.5%
    c = _hyps(tmp_path / "onnx_bad", same[:197] + ["u197 你", "u198 你", "u199 好"])  # 98.5%
    assert score.main(["--agree", a, b]) == 0
    assert "identical hypotheses: 199/200 (99.50%); required >= 99%: ok" in capsys.readouterr().out
    assert score.main(["--agree", a, c]) == 1
    err = capsys.readouterr().err
    assert "identical hypotheses: 197/200 (98.50%); required >= 99%: FAILED" in err
    assert score.main(["--agree", a, c, "--min-agree", "98"]) == 0
    d = _hyps(tmp_path / "empty", [])
    assert score.main(["--agree", d, d]) == 1  # nothing decoded agrees with nothing
