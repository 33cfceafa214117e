"""Hotword biasing: the context graph's bonus and its withdrawal, on hand-built CTC posteriors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from e2e_asr.data.units import Tokenizer
from e2e_asr.decode.config import DecodeConfig, DecodeConfigError
from e2e_asr.decode.context_graph import ContextGraph, HotwordError, load_hotwords
from e2e_asr.decode.search import (
    attention_beam_search,
    ctc_prefix_beam,
    decode_batch,
    rescore_nbest,
)

V = 8  # 0 blank, 1 unk, 2..6 tokens, 7 sos/eos


def test_bonus_per_token_and_withdrawal_when_the_match_breaks() -> None:
    g = ContextGraph([([3, 4, 5], 2.0)])
    s = g.start
    d1, s = g.step(s, 3)
    d2, s = g.step(s, 4)
    assert (d1, d2) == (2.0, 2.0)  # one bonus per matched token
    d3, s = g.step(s, 6)  # the partial match breaks: its bonus is withdrawn
    assert d3 == -4.0 and s == g.start
    assert g.score([3, 4, 5]) == 6.0  # a complete phrase keeps its bonus
    assert g.score([3, 4, 5, 6, 2]) == 6.0  # ... whatever follows
    assert g.score([3, 4]) == 0.0  # unfinished at the end: withdrawn
    assert g.score([2, 3, 4, 6]) == 0.0
    assert g.score([3, 4, 5, 3, 4, 5]) == 12.0


def test_failure_links_fall_back_to_a_suffix_that_starts_a_phrase() -> None:
    # after "3 4" the match of [3, 4, 5] breaks on 6, but "4 6" begins... and ends [4, 6]
    g = ContextGraph([([3, 4, 5], 1.0), ([4, 6], 1.5)])
    s = g.start
    total = 0.0
    for tok, want in ((3, 1.0), (4, 1.0), (6, -2.0 + 3.0)):
        d, s = g.step(s, tok)
        assert math.isclose(d, want), (tok, d)
        total += d
    assert math.isclose(total, 3.0) and math.isclose(g.score([3, 4, 6]), 3.0)
    # a repeated first token keeps the match open at depth 1
    assert g.score([3, 3, 4, 5]) == 3.0


def test_a_phrase_that_begins_a_longer_one_is_committed() -> None:
    g = ContextGraph([([3, 4], 1.0), ([3, 4, 5, 6], 1.0)])
    assert g.score([3, 4]) == 2.0
    assert g.score([3, 4, 5]) == 2.0  # [3, 4] complete and kept; the open 5 is withdrawn
    assert g.score([3, 4, 5, 6]) == 4.0
    assert len(g) == 2


def _posteriors(frames: list[dict[int, float]]) -> np.ndarray:
    """log-probs [T, V] from per-frame {token: prob}; the rest of the mass on blank."""
    lp = np.full((len(frames), V), 1e-4)
    for t, f in enumerate(frames):
        for tok, p in f.items():
            lp[t, tok] = p
        lp[t, 0] += max(0.0, 1.0 - lp[t].sum())
    return np.log(lp / lp.sum(axis=1, keepdims=True))


def test_prefix_beam_search_favours_the_phrase() -> None:
    # acoustically "3 2" beats "3 4" (0.55 vs 0.4 on the second token); hotword [3, 4]
    lp = _posteriors([{3: 0.9}, {}, {2: 0.55, 4: 0.4}, {}])
    plain = ctc_prefix_beam(lp, beam=4)
    assert plain[0][0] == [3, 2]
    g = ContextGraph([([3, 4], 1.0)])
    biased = ctc_prefix_beam(lp, beam=4, context=g)
    assert biased[0][0] == [3, 4]
    # the returned score is the acoustic one plus the phrase's bonus (2 tokens x 1.0); the
    # beams differ in prefixes of ~1e-4 probability, so the sums agree to ~1e-3
    acoustic = dict((tuple(h), s) for h, s in plain)
    assert math.isclose(biased[0][1], acoustic[(3, 4)] + 2.0, abs_tol=1e-3)


def test_a_broken_partial_match_earns_nothing() -> None:
    # the audio says "3 5": the phrase [3, 4, 6] only matches its first token
    lp = _posteriors([{3: 0.9}, {}, {5: 0.9}, {}])
    plain = ctc_prefix_beam(lp, beam=4)
    biased = ctc_prefix_beam(lp, beam=4, context=ContextGraph([([3, 4, 6], 3.0)]))
    assert biased[0][0] == plain[0][0] == [3, 5]
    # the bonus of "3" was withdrawn when "5" broke the match: same score as without
    assert math.isclose(biased[0][1], plain[0][1], abs_tol=1e-3)
    # an unfinished match at the end of the utterance is withdrawn too
    lp = _posteriors([{2: 0.9}, {}, {3: 0.9}, {}])
    biased = ctc_prefix_beam(lp, beam=4, context=ContextGraph([([3, 4], 3.0)]))
    assert biased[0][0] == [2, 3]
    assert math.isclose(biased[0][1], ctc_prefix_beam(lp, beam=4)[0][1], abs_tol=1e-3)


class FlatDecoder:
    """An attention decoder with no opinion: every token equally likely."""

    vocab_size = V
    eos = V - 1

    def __init__(self, ctc: np.ndarray) -> None:
        self.ctc = ctc

    def encode(self, feats, lens):
        b = feats.shape[0]
        return np.zeros((b, 1, 1)), np.full(b, self.ctc.shape[0]), np.stack([self.ctc] * b)

    def decoder_logprobs(self, ys_in, ys_lens, enc, enc_lens):
        n, L = ys_in.shape
        return np.full((n, L, V), -math.log(V), dtype=np.float32)

    def take(self, enc, index):
        return enc[index]


def test_the_bonus_is_carried_into_attention_rescoring() -> None:
    lp = _posteriors([{3: 0.9}, {}, {2: 0.55, 4: 0.4}, {}])
    scorer = FlatDecoder(lp)
    g = ContextGraph([([3, 4], 1.0)])
    feats, lens = np.zeros((1, 4, 2), np.float32), np.array([4])
    cfg = DecodeConfig(mode="attention_rescoring", beam=4, ctc_beam=4, ctc_weight=0.5)
    assert decode_batch(scorer, feats, lens, cfg) == [[3, 2]]
    assert decode_batch(scorer, feats, lens, cfg, context=g) == [[3, 4]]
    # rescoring alone (n-best without bonus in its scores) still prefers the phrase
    nbest = ctc_prefix_beam(lp, beam=4)
    enc = np.zeros((1, 1, 1))
    assert rescore_nbest(scorer, enc, np.array([4]), [nbest], 0.5, g) == [[3, 4]]
    with pytest.raises(ValueError, match="hotwords"):
        decode_batch(scorer, feats, lens, DecodeConfig(mode="ctc_greedy"), context=g)


def test_attention_beam_search_takes_the_bonus_and_withdraws_an_unfinished_match() -> None:
    lp = _posteriors([{3: 0.9}, {}, {2: 0.55, 4: 0.4}, {}])
    scorer = FlatDecoder(lp)
    enc = np.zeros((1, 1, 1))
    kw = {"beam": 4, "ctc_beam": V, "ctc_weight": 0.5}  # a flat decoder: every token a candidate
    plain = attention_beam_search(scorer, enc, 4, lp, **kw)
    assert plain[0][0] == [3, 2]
    g = ContextGraph([([3, 4], 1.0)])
    biased = attention_beam_search(scorer, enc, 4, lp, context=g, **kw)
    assert biased[0][0] == [3, 4]
    # an ended hypothesis' score holds its whole bonus (2 tokens x 1.0), added to the search's
    # own (1 - ctc_weight) * att + ctc_weight * ctc
    acoustic = {tuple(h): sc for h, sc in plain}
    assert math.isclose(biased[0][1], acoustic[(3, 4)] + 2.0, abs_tol=1e-6)
    # the audio says "3 2": the phrase [3, 4, 6] matches only its first token, and the
    # bonus of that token is gone from every ended hypothesis (broken or unfinished)
    lp = _posteriors([{3: 0.9}, {}, {2: 0.9}, {}])
    scorer = FlatDecoder(lp)
    plain = attention_beam_search(scorer, enc, 4, lp, **kw)
    g = ContextGraph([([3, 4, 6], 3.0)])
    biased = attention_beam_search(scorer, enc, 4, lp, context=g, **kw)
    assert biased[0][0] == plain[0][0] == [3, 2]
    assert math.isclose(biased[0][1], plain[0][1], abs_tol=1e-6)
    acoustic = {tuple(h): sc for h, sc in plain}
    both = [(h, sc) for h, sc in biased if tuple(h) in acoustic]
    assert len(both) >= 3
    for hyp, sc in both:  # e.g. "3 4" unfinished: bonus 0; a complete "3 4 6": 9
        assert math.isclose(sc, acoustic[tuple(hyp)] + g.score(hyp), abs_tol=1e-6)
    # and decode_batch carries the context into mode attention
    feats, lens = np.zeros((1, 4, 2), np.float32), np.array([4])
    cfg = DecodeConfig(mode="attention", beam=4, ctc_beam=V, ctc_weight=0.5)
    lp = _posteriors([{3: 0.9}, {}, {2: 0.55, 4: 0.4}, {}])
    scorer = FlatDecoder(lp)
    assert decode_batch(scorer, feats, lens, cfg) == [[3, 2]]
    assert decode_batch(scorer, feats, lens, cfg, context=ContextGraph([([3, 4], 1.0)])) == [[3, 4]]


def test_hotword_file_scores_comments_and_unknown_characters(tmp_path: Path) -> None:
    tok = Tokenizer(["<blank>", "<unk>", *"北京大学上海", "<sos/eos>"])
    f = tmp_path / "hot.txt"
    f.write_text("# places\n北京大学 :3.5\n\n上海\n东京\n", encoding="utf-8")
    msgs: list[str] = []
    g = load_hotwords(f, tok, 1.0, msgs.append)
    assert len(g) == 2
    assert g.score(tok.encode("北京大学")) == 4 * 3.5
    assert g.score(tok.encode("上海")) == 2 * 1.0
    assert any(f"{f}:5" in m and "东京" in m for m in msgs), msgs  # file:line of the skip
    assert any("2 hotword phrases, 1 skipped" in m for m in msgs), msgs
    f.write_text("北京 :x\n", encoding="utf-8")
    with pytest.raises(HotwordError, match=rf"{f}:1"):
        load_hotwords(f, tok, 1.0)
    f.write_text("东京\n", encoding="utf-8")
    with pytest.raises(HotwordError, match="no usable"):
        load_hotwords(f, tok, 1.0)


def test_decode_config_refuses_hotwords_where_they_do_nothing() -> None:
    with pytest.raises(DecodeConfigError, match="hotwords"):
        DecodeConfig(mode="ctc_greedy", hotwords="x.txt")
    with pytest.raises(DecodeConfigError, match="hotword_score"):
        DecodeConfig(hotword_score=0.0)
    assert DecodeConfig().updated(hotwords="h.txt", hotword_score=1.5).hotwords == "h.txt"
    # a command-line override (transcribe/decode) is named once, not "decode config: " twice
    with pytest.raises(DecodeConfigError) as err:
        DecodeConfig().updated(mode="ctc_greedy", hotwords="h.txt")
    assert str(err.value).startswith("decode config: hotwords work with mode ctc_prefix_beam")
    assert str(err.value).count("decode config") == 1
