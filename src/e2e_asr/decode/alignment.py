"""Token timestamps and confidences from a CTC forced alignment of the final hypothesis.

Whatever search produced the hypothesis (greedy, prefix beam, attention rescoring), its tokens
are aligned to the utterance's CTC log-posteriors with the Viterbi algorithm over the usual CTC
topology (optional blanks between tokens, a blank required between two equal tokens). Each
token then covers the encoder frames the best path spends on it:

- ``start``: the time of its first frame, ``duration``: until its last frame ends (CTC tokens
  are spiky, so this is often one encoder frame, 40 ms at 4x subsampling);
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
) -> list[TokenTime]:
    """Start, duration and confidence of each token (see the module docstring).

    ``frame_seconds`` is the time step of one row of ``log_probs`` (frame shift x subsampling).
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
    out = []
    for i, tok in enumerate(tokens):
        frames = np.flatnonzero(path == i)
        first, last = int(frames[0]), int(frames[-1])
        conf = float(np.exp(lp[frames, tok]).mean())
        out.append(TokenTime(tok, first * frame_seconds, (last + 1 - first) * frame_seconds, conf))
    return out
