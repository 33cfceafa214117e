"""Token timestamps and confidences from a CTC forced alignment of the final hypothesis.

Whatever search produced the hypothesis (greedy, prefix beam, attention rescoring), its tokens
are aligned to the utterance's CTC log-posteriors with the Viterbi algorithm over the usual CTC
topology (optional blanks between tokens, a blank required between two equal tokens). Each
token then covers the encoder frames the best path spends on it:

- ``start``, ``duration``: CTC tokens are spikes (often one encoder frame, 40 ms at 4x
  subsampling) somewhere inside their sound; given the frame energies of the input features,
  each spike is widened to the speech around it, bounded by silence or, between joined
  sounds, by the midpoint to the neighbouring spike (``refine_spans``); without them, the
  spike's own frames;
- ``confidence``: the mean posterior of the token over its frames (in [0, 1]).

A hypothesis that cannot be aligned (more frames needed than the utterance has, which only
an attention search can produce) gets evenly spread times and confidence 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

NEG_INF = -np.inf


@dataclass(frozen=True)
class TokenTime:
    token: int
    start: float  # seconds
    duration: float  # seconds
    confidence: float  # mean posterior over the token's frames, 0..1

    def to_dict(self, symbol: str) -> dict[str, Any]:
        return {
            "token": symbol,
            "start": round(self.start, 3),
            "duration": round(self.duration, 3),
            "confidence": round(self.confidence, 4),
        }


def ctc_forced_align(log_probs: Any, tokens: list[int], blank: int = 0) -> np.ndarray | None:
    """Best CTC path of ``tokens`` through ``log_probs`` [T, V].

    Returns, per frame, the index of the token that frame is spent on, or -1 for a blank
    frame; None if the tokens need more frames than there are.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T = lp.shape[0]
    L = len(tokens)
    if L == 0:
        return np.full(T, -1, dtype=np.int64)
    repeats = sum(1 for a, b in zip(tokens, tokens[1:], strict=False) if a == b)
    if T < L + repeats:
        return None
    # extended labels: blank, y1, blank, y2, ..., yL, blank
    S = 2 * L + 1
    ext = np.full(S, blank, dtype=np.int64)
    ext[1::2] = tokens
    # skipping a blank (s-2 -> s) is allowed into a token that differs from the one before
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    emit = lp[:, ext]  # [T, S]
    score = np.full(S, NEG_INF)
    score[0] = emit[0, 0]
    score[1] = emit[0, 1]
    back = np.zeros((T, S), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, T):
        stay = score
        prev1 = np.concatenate(([NEG_INF], score[:-1]))
        prev2 = np.where(skip, np.concatenate(([NEG_INF, NEG_INF], score[:-2])), NEG_INF)
        cand = np.stack([stay, prev1, prev2])
        arg = np.argmax(cand, axis=0)
        score = cand[arg, np.arange(S)] + emit[t]
        back[t] = arg
    s = S - 1 if score[S - 1] >= score[S - 2] else S - 2
    if not np.isfinite(score[s]):
        return None
    path = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    return np.where(path % 2 == 1, path // 2, -1)


def token_times(
    log_probs: Any,
    tokens: list[int],
    frame_seconds: float,
    blank: int = 0,
    energy: Any = None,
    subsampling: int = 1,
) -> list[TokenTime]:
    """Start, duration and confidence of each token (see the module docstring).

    ``frame_seconds`` is the time step of one row of ``log_probs`` (frame shift x subsampling).
    With ``energy`` (per input feature frame, e.g. the log mel energy of fbank features, and
    ``subsampling`` input frames per row of ``log_probs``), each token's span is widened from
    its CTC spike to the speech around it (``refine_spans``).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    T = lp.shape[0]
    if not tokens:
        return []
    path = ctc_forced_align(lp, tokens, blank)
    if path is None:
        step = T / len(tokens)
        return [
            TokenTime(tok, i * step * frame_seconds, step * frame_seconds, 0.0)
            for i, tok in enumerate(tokens)
        ]
    spans, conf = [], []
    for i, tok in enumerate(tokens):
        frames = np.flatnonzero(path == i)
        spans.append((int(frames[0]), int(frames[-1]) + 1))
        conf.append(float(np.exp(lp[frames, tok]).mean()))
    step = frame_seconds
    if energy is not None and subsampling > 0:
        e = np.asarray(energy, dtype=np.float64)
        spans = refine_spans([(a * subsampling, b * subsampling) for a, b in spans], e)
        step = frame_seconds / subsampling
    return [
        TokenTime(tok, a * step, (b - a) * step, c)
        for tok, (a, b), c in zip(tokens, spans, conf, strict=True)
    ]


def refine_spans(spans: list[tuple[int, int]], energy: np.ndarray) -> list[tuple[int, int]]:
    """Widen CTC spike spans (input-frame [start, end) pairs, in order) to the speech around
    them.

    CTC emits a token on one or two frames somewhere inside its sound, so the spike alone says
    little about where the sound begins and ends. Between two spikes, the frame energy tells:
    a token starts after the last silent frame before its spike and ends at the first silent
    frame after it (silent: below 30% of the way from the utterance's quiet to loud energy,
    5th to 95th percentile, over a 3-frame average); when no silent frame separates two
    spikes (sounds joined), the boundary is the midpoint between them.
    """
    n = energy.shape[0]
    if not spans or n == 0:
        return spans
    e = np.convolve(energy, np.ones(3) / 3, mode="same") if n >= 3 else energy
    lo, hi = np.percentile(e, 5), np.percentile(e, 95)
    silent = e < lo + 0.3 * (hi - lo)
    out = []
    for k, (a, b) in enumerate(spans):
        a, b = min(a, n - 1), min(max(b, a + 1), n)
        prev_end = min(spans[k - 1][1], n) if k > 0 else 0
        next_start = min(spans[k + 1][0], n) if k + 1 < len(spans) else n
        start = a
        if not silent[a]:
            quiet = np.flatnonzero(silent[prev_end:a])
            start = prev_end + int(quiet[-1]) + 1 if quiet.size else (prev_end + a) // 2
        end = b
        if not silent[b - 1]:
            quiet = np.flatnonzero(silent[b:next_start])
            end = b + int(quiet[0]) if quiet.size else (b + next_start + 1) // 2
        out.append((start, max(end, start + 1)))
    return out
