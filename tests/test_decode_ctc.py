"""CTC greedy and prefix beam search on hand-made log-prob arrays."""

import itertools
import math

import numpy as np
import pytest
import torch

from e2e_asr.decode.search import ctc_greedy, ctc_prefix_beam


def _logp(rows: list[list[float]]) -> np.ndarray:
    p = np.asarray(rows, dtype=np.float64)
    return np.log(p / p.sum(-1, keepdims=True))


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    # argmax path: 1 1 0 1 2 2 0 -> [1, 1, 2]; the padded frames of utterance 2 are ignored
    path = [1, 1, 0, 1, 2, 2, 0]
    lp = np.full((2, 7, 3), -5.0)
    for t, k in enumerate(path):
        lp[0, t, k] = 0.0
    lp[1, :, 2] = 0.0
    lp[1, 3:, 1] = 1.0
    assert ctc_greedy(lp, [7, 3]) == [[1, 1, 2], [2]]
    assert ctc_greedy(torch.from_numpy(lp), torch.tensor([7, 3])) == [[1, 1, 2], [2]]


def test_greedy_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="length 9"):
        ctc_greedy(np.zeros((1, 4, 3)), [9])


def test_prefix_beam_width_one_equals_greedy() -> None:
    # confident posteriors (best unit >= 0.9 per frame), as a trained model gives; on flat
    # ones beam 1 may legitimately prefer a prefix whose mass is spread over several paths
    rng = np.random.default_rng(0)
    best = rng.integers(0, 6, size=(3, 40))
    p = rng.random((3, 40, 6)) * 0.1 / 6
    np.put_along_axis(p, best[..., None], 0.9, axis=-1)
    lp = np.log(p / p.sum(-1, keepdims=True))
    lens = [40, 25, 7]
    greedy = ctc_greedy(lp, lens)
    for b in range(3):
        assert ctc_prefix_beam(lp[b], lens[b], beam=1)[0][0] == greedy[b]


def test_prefix_beam_sums_alignments() -> None:
    # Two frames, vocab {blank, a}. Best path is blank-blank (0.36) -> "", but the prefix "a"
    # collects a-a, a-blank, blank-a = 0.16 + 0.24 + 0.24 = 0.64 and must win.
    lp = _logp([[0.6, 0.4], [0.6, 0.4]])
    assert ctc_greedy(lp[None], [2]) == [[]]
    hyps = ctc_prefix_beam(lp, beam=4)
    assert hyps[0][0] == [1]
    assert hyps[0][1] == pytest.approx(math.log(0.64))
    assert hyps[1][0] == [] and hyps[1][1] == pytest.approx(math.log(0.36))


def _brute_force(lp: np.ndarray) -> dict[tuple[int, ...], float]:
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        seq, prev = [], -1
        for k in path:
            if k != prev and k != 0:
                seq.append(k)
            prev = k
        p = math.exp(sum(lp[t, k] for t, k in enumerate(path)))
        out[tuple(seq)] = out.get(tuple(seq), 0.0) + p
    return out


def test_prefix_beam_is_exact_with_a_wide_beam() -> None:
    rng = np.random.default_rng(7)
    x = rng.random((5, 4)) + 0.05
    lp = np.log(x / x.sum(1, keepdims=True))
    want = _brute_force(lp)
    got = ctc_prefix_beam(lp, beam=1000, prune_top_k=3)
    assert len(got) == len(want)
    for hyp, score in got:
        assert math.exp(score) == pytest.approx(want[tuple(hyp)], rel=1e-9)
    assert got[0][0] == list(max(want, key=want.get))


def test_prefix_beam_repeat_needs_blank() -> None:
    # "a a" needs a blank between the two a's: only path a-blank-a, p = .5 * .5 * .5
    lp = _logp([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    scores = {tuple(h): s for h, s in ctc_prefix_beam(lp, beam=8)}
    assert scores[(1, 1)] == pytest.approx(math.log(0.125))
    # "a": aaa, aa_, a__, _aa, __a, _a_, a_... = all paths with one run of a's: 6 of 8
    assert scores[(1,)] == pytest.approx(math.log(6 * 0.125))
