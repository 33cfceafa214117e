"""Search algorithms over CTC log-probabilities and an attention decoder.

Everything here works on plain arrays / a small scorer interface, so the torch model and the
ONNX Runtime sessions share one implementation (see ``scorer.py``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

BLANK = 0
NEG_INF = -float("inf")


def _to_numpy(x: Any) -> np.ndarray:
    """Accept torch tensors, numpy arrays and nested lists without importing torch here."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _lengths(lengths: Any, batch: int, time: int) -> list[int]:
    if lengths is None:
        return [time] * batch
    out = [int(v) for v in _to_numpy(lengths).reshape(-1)]
    if len(out) != batch:
        raise ValueError(f"ctc search: {len(out)} lengths for a batch of {batch}")
    for v in out:
        if v < 0 or v > time:
            raise ValueError(f"ctc search: length {v} outside [0, {time}]")
    return out


def ctc_greedy(log_probs: Any, lengths: Any = None, blank: int = BLANK) -> list[list[int]]:
    """Best path decoding: argmax per frame, repeats collapsed, blanks removed.

    ``log_probs`` is [B, T, V] (tensor or array), ``lengths`` [B] valid frames per utterance.
    """
    lp = _to_numpy(log_probs)
    if lp.ndim != 3:
        raise ValueError(f"ctc_greedy: expected [B, T, V] log-probs, got shape {lp.shape}")
    lens = _lengths(lengths, lp.shape[0], lp.shape[1])
    best = lp.argmax(axis=-1)
    hyps: list[list[int]] = []
    for b, n in enumerate(lens):
        path = best[b, :n]
        out: list[int] = []
        prev = -1
        for tok in path.tolist():
            if tok != prev and tok != blank:
                out.append(tok)
            prev = tok
        hyps.append(out)
    return hyps


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def ctc_prefix_beam(
    log_probs: Any,
    length: int | None = None,
    beam: int = 10,
    blank: int = BLANK,
    prune_top_k: int | None = None,
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one utterance's [T, V] log-probs.

    Returns up to ``beam`` (prefix, log-prob) pairs, best first, where the score sums over all
    alignments of the prefix (blank-ending and non-blank-ending paths kept apart). Only the
    ``prune_top_k`` (default ``beam``) most likely tokens of each frame are expanded, which is
    what keeps a 5000-unit vocabulary affordable.
    """
    lp = _to_numpy(log_probs).astype(np.float64, copy=False)
    if lp.ndim != 2:
        raise ValueError(f"ctc_prefix_beam: expected [T, V] log-probs, got shape {lp.shape}")
    T = lp.shape[0] if length is None else int(length)
    k = min(prune_top_k or beam, lp.shape[1])
    # prefix -> (log p ending in blank, log p ending in non-blank)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for t in range(T):
        frame = lp[t]
        top = np.argpartition(-frame, k - 1)[:k] if k < frame.shape[0] else range(frame.shape[0])
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for tok in top:
            tok = int(tok)
            p = float(frame[tok])
            for prefix, (pb, pnb) in beams.items():
                if tok == blank:
                    e = nxt[prefix]
                    e[0] = _logaddexp(e[0], _logaddexp(pb, pnb) + p)
                    continue
                last = prefix[-1] if prefix else None
                new = prefix + (tok,)
                e = nxt[new]
                if tok == last:
                    # a repeat only extends the prefix after a blank; without one it collapses
                    e[1] = _logaddexp(e[1], pb + p)
                    same = nxt[prefix]
                    same[1] = _logaddexp(same[1], pnb + p)
                else:
                    e[1] = _logaddexp(e[1], _logaddexp(pb, pnb) + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam]
        beams = {pfx: (v[0], v[1]) for pfx, v in ranked}
    out = [(list(pfx), _logaddexp(pb, pnb)) for pfx, (pb, pnb) in beams.items()]
    out.sort(key=lambda x: x[1], reverse=True)
    return out
