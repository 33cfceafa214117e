"""Attention beam search, joint CTC prefix scoring and rescoring on hand-built scorers."""

import itertools
import math

import numpy as np
import pytest

from e2e_asr.decode.config import DecodeConfig, DecodeConfigError
from e2e_asr.decode.search import (
    CTCPrefixScorer,
    attention_beam_search,
    decode_batch,
    rescore_nbest,
)

V, EOS = 5, 4  # 0 blank, 1 a, 2 b, 3 c, 4 sos/eos


class TableScorer:
    """A decoder whose next-token distribution is a table over prefixes (sos excluded)."""

    vocab_size = V
    eos = EOS

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], ctc: np.ndarray) -> None:
        self.table = table
        self.ctc = ctc
        self.calls = 0

    def _dist(self, prefix: tuple[int, ...]) -> np.ndarray:
        p = np.full(V, 1e-6)
        for tok, q in self.table.get(prefix, {EOS: 1.0}).items():
            p[tok] = q
        return np.log(p / p.sum())

    def encode(self, feats, lens):
        b = feats.shape[0]
        return np.zeros((b, 1, 1)), np.full(b, self.ctc.shape[0]), np.stack([self.ctc] * b)

    def decoder_logprobs(self, ys_in, ys_lens, enc, enc_lens):
        self.calls += 1
        n, L = ys_in.shape
        out = np.zeros((n, L, V), dtype=np.float32)
        for i in range(n):
            for j in range(int(ys_lens[i])):
                out[i, j] = self._dist(tuple(int(t) for t in ys_in[i, 1 : j + 1]))
        return out

    def take(self, enc, index):
        return enc[index]


# Garden path: "a" looks best after one token (0.6 vs 0.4), but "b <eos>" (0.36) beats
# every continuation of "a" (best: "a c <eos>", 0.24).
GARDEN = {
    (): {1: 0.6, 2: 0.4},
    (1,): {3: 0.4, 2: 0.3, EOS: 0.3},
    (1, 3): {EOS: 1.0},
    (1, 2): {EOS: 1.0},
    (2,): {EOS: 0.9, 3: 0.1},
}
FLAT_CTC = np.log(np.full((6, V), 1.0 / V))


def _search(scorer, **kw):
    return attention_beam_search(scorer, np.zeros((1, 1, 1)), 6, scorer.ctc, **kw)


def test_attention_beam_finds_the_best_path_greedy_misses() -> None:
    s = TableScorer(GARDEN, FLAT_CTC)
    greedy = _search(s, beam=1, ctc_weight=0.0)
    assert greedy[0][0] == [1, 3]
    assert greedy[0][1] == pytest.approx(math.log(0.24), abs=1e-4)
    assert s.calls == 3  # sos; a; a c -> eos
    s.calls = 0
    best = _search(s, beam=2, ctc_weight=0.0)
    assert best[0][0] == [2]
    assert best[0][1] == pytest.approx(math.log(0.36), abs=1e-4)
    # stops as soon as the ended "b" beats every running hypothesis: 2 decoder steps
    assert s.calls == 2


def test_joint_ctc_overrides_the_decoder() -> None:
    # CTC is sure the audio says "a c": frames a, blank, c, blank, blank, blank
    peaky = np.full((6, V), 0.01)
    for t, k in enumerate([1, 0, 3, 0, 0, 0]):
        peaky[t, k] = 0.96
    ctc = np.log(peaky / peaky.sum(1, keepdims=True))
    s = TableScorer(GARDEN, ctc)
    assert _search(s, beam=2, ctc_weight=0.0)[0][0] == [2]
    assert _search(s, beam=2, ctc_beam=4, ctc_weight=0.5)[0][0] == [1, 3]


def _brute_prefix_prob(logp: np.ndarray, prefix: tuple[int, ...], exact: bool) -> float:
    """Sum over all frame paths whose collapsed label sequence starts with (or, with exact,
    equals) ``prefix``."""
    T, Vx = logp.shape
    total = 0.0
    for path in itertools.product(range(Vx), repeat=T):
        seq, prev = [], -1
        for k in path:
            if k != prev and k != 0:
                seq.append(k)
            prev = k
        ok = tuple(seq) == prefix if exact else tuple(seq[: len(prefix)]) == prefix
        if ok:
            total += math.exp(sum(logp[t, k] for t, k in enumerate(path)))
    return total


def test_ctc_prefix_scores_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((5, 4)) + 0.1
    logp = np.log(x / x.sum(1, keepdims=True))
    eos = 3  # token 3 plays eos: as a candidate it means "the prefix is complete"
    ctc = CTCPrefixScorer(logp, blank=0, eos=eos)
    state = ctc.initial_state()[None]
    cands = np.array([[1, 2, eos, 0]])
    psi, states = ctc.score(0, np.array([-1]), state, cands)
    assert math.exp(psi[0, 0]) == pytest.approx(_brute_prefix_prob(logp, (1,), False))
    assert math.exp(psi[0, 1]) == pytest.approx(_brute_prefix_prob(logp, (2,), False))
    # eos after the empty prefix: the all-blank path; blank is never a candidate
    assert math.exp(psi[0, 2]) == pytest.approx(math.exp(logp[:, 0].sum()))
    assert psi[0, 3] == -np.inf
    # extend "1" by 1 (a repeat, needs a blank in between), by 2, and end it
    psi2, _ = ctc.score(1, np.array([1]), states[:, 0], np.array([[1, 2, eos]]))
    assert math.exp(psi2[0, 0]) == pytest.approx(_brute_prefix_prob(logp, (1, 1), False))
    assert math.exp(psi2[0, 1]) == pytest.approx(_brute_prefix_prob(logp, (1, 2), False))
    assert math.exp(psi2[0, 2]) == pytest.approx(_brute_prefix_prob(logp, (1,), True))


def test_rescoring_combines_ctc_and_attention_scores() -> None:
    # decoder: "b" then eos is likely (0.9 * 0.9), "a" then eos unlikely (0.1 * 0.5)
    table = {(): {1: 0.1, 2: 0.9}, (1,): {EOS: 0.5, 3: 0.5}, (2,): {EOS: 0.9, 3: 0.1}}
    s = TableScorer(table, FLAT_CTC)
    nbest = [([1], math.log(0.5)), ([2], math.log(0.2))]
    att_a, att_b = math.log(0.1 * 0.5), math.log(0.9 * 0.9)
    for w in (0.3, 0.9, 1.0):
        a = w * math.log(0.5) + (1 - w) * att_a
        b = w * math.log(0.2) + (1 - w) * att_b
        want = [1] if a > b else [2]
        got = rescore_nbest(s, np.zeros((1, 1, 1)), np.array([6]), [nbest], w)
        assert got == [want], w
    # one decoder call per utterance with hypotheses; an empty n-best gives an empty result
    s.calls = 0
    got = rescore_nbest(s, np.zeros((3, 1, 1)), np.array([6, 6, 6]), [nbest, [], nbest], 0.3)
    assert got == [[2], [], [2]] and s.calls == 2


def test_decode_batch_modes_on_table_scorer() -> None:
    peaky = np.full((6, V), 0.01)
    for t, k in enumerate([1, 0, 3, 0, 0, 0]):
        peaky[t, k] = 0.96
    s = TableScorer(GARDEN, np.log(peaky / peaky.sum(1, keepdims=True)))
    feats, lens = np.zeros((2, 6, 1), np.float32), np.array([6, 6])
    for mode in ("ctc_greedy", "ctc_prefix_beam", "attention_rescoring", "attention"):
        cfg = DecodeConfig(mode=mode, beam=2, ctc_beam=4, ctc_weight=0.5)
        assert decode_batch(s, feats, lens, cfg) == [[1, 3], [1, 3]], mode


def test_decode_config_validation_and_seed_keys(tmp_path) -> None:
    p = tmp_path / "train.yaml"
    p.write_text(
        "decode_config:\n  beam: 10\n  ctc_beam: 15\n  lm_rate: 0\n  ctc_weight: 0.3\n"
        "  char_num: 5720\n"
    )
    cfg = DecodeConfig.from_yaml(p)
    assert (cfg.beam, cfg.ctc_beam, cfg.ctc_weight, cfg.mode) == (
        10,
        15,
        0.3,
        "attention_rescoring",
    )
    with pytest.raises(DecodeConfigError, match="char_num 5720"):
        cfg.check_vocab(100, "m")
    with pytest.raises(DecodeConfigError, match="unknown key.*beem"):
        DecodeConfig.from_dict({"beem": 3})
    with pytest.raises(DecodeConfigError, match="lm_rate"):
        DecodeConfig.from_dict({"lm_rate": 0.5})
    assert cfg.updated(mode="ctc_greedy", beam=None).mode == "ctc_greedy"


def test_decode_config_from_checkpoint_is_lenient_and_says_so() -> None:
    notes: list[str] = []
    payload = {"config": {"decode_config": {"beam": 5, "nbest": 1, "lm_rate": 0.5}}}
    cfg = DecodeConfig.from_checkpoint(payload, "ck", notes.append)
    assert (cfg.beam, cfg.lm_rate) == (5, 0.0)
    assert any("nbest" in n for n in notes) and any("lm_rate 0.5" in n for n in notes)
