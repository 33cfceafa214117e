"""Search algorithms over CTC log-probabilities and an attention decoder.

Everything here works on plain arrays / a small scorer interface, so the torch model and the
ONNX Runtime sessions share one implementation (see ``scorer.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from e2e_asr.decode.config import HOTWORD_MODES, DecodeConfig, hotword_mode_error

if TYPE_CHECKING:
    from e2e_asr.decode.context_graph import ContextGraph
    from e2e_asr.decode.scorer import Scorer

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


def ctc_prefix_beam(
    log_probs: Any,
    length: int | None = None,
    beam: int = 10,
    blank: int = BLANK,
    prune_top_k: int | None = None,
    context: ContextGraph | None = None,
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one utterance's [T, V] log-probs.

    Returns up to ``beam`` (prefix, log-prob) pairs, best first, where the score sums over all
    alignments of the prefix (blank-ending and non-blank-ending paths kept apart). Each frame
    extends every prefix by the ``prune_top_k`` (default ``beam``) likeliest non-blank tokens
    of that frame, which is what keeps a 5000-unit vocabulary affordable; the blank and the
    repeat of a prefix's last token are always scored. The per-frame work is numpy over
    prefixes x tokens; Python only touches the few prefixes that survive.

    With a hotword ``context`` graph, every prefix also carries its context state and bonus:
    prefixes are ranked by log-prob + bonus, and the returned scores include the bonus
    (unfinished matches withdrawn at the end, see ``context_graph``).
    """
    lp = _to_numpy(log_probs).astype(np.float64, copy=False)
    if lp.ndim != 2:
        raise ValueError(f"ctc_prefix_beam: expected [T, V] log-probs, got shape {lp.shape}")
    T = lp.shape[0] if length is None else int(length)
    V = lp.shape[1]
    k = max(1, min(prune_top_k or beam, V - 1))
    prefixes: list[tuple[int, ...]] = [()]
    pb = np.array([0.0])  # log p(prefix, path ends in blank)
    pnb = np.array([NEG_INF])  # log p(prefix, path ends in its last token)
    last = np.array([-1])
    ctx_states = [context.start] if context is not None else []
    ctx = np.array([0.0])  # hotword bonus of each prefix so far
    for t in range(T):
        frame = lp[t]
        masked = frame.copy()
        masked[blank] = NEG_INF
        tok = np.argpartition(-masked, k - 1)[:k] if k < V - 1 else np.flatnonzero(masked > NEG_INF)
        ptok = frame[tok]
        with np.errstate(invalid="ignore"):
            tot = np.logaddexp(pb, pnb)
            # the prefix stays: a blank, or its last token once more (collapsed)
            stay_b = tot + frame[blank]
            stay_nb = np.where(last >= 0, pnb + frame[np.maximum(last, 0)], NEG_INF)
            # the prefix grows by a token; repeating the last one needs a blank in between
            rep = tok[None, :] == last[:, None]
            ext = np.where(rep, pb[:, None], tot[:, None]) + ptok[None, :]
        # an extension that equals a prefix already in the beam adds to that prefix
        index = {p: i for i, p in enumerate(prefixes)}
        tok_pos = {int(c): j for j, c in enumerate(tok)}
        for qi, q in enumerate(prefixes):
            if not q:
                continue
            pi, j = index.get(q[:-1]), tok_pos.get(q[-1])
            if pi is not None and j is not None:
                stay_nb[qi] = np.logaddexp(stay_nb[qi], ext[pi, j])
                ext[pi, j] = NEG_INF
        n = len(prefixes)
        ext_ctx = None
        if context is not None:
            steps = [[context.step(st, int(c)) for c in tok] for st in ctx_states]
            ext_ctx = ctx[:, None] + np.array([[d for d, _ in row] for row in steps])
            with np.errstate(invalid="ignore"):
                scores = np.concatenate(
                    [np.logaddexp(stay_b, stay_nb) + ctx, (ext + ext_ctx).ravel()]
                )
        else:
            scores = np.concatenate([np.logaddexp(stay_b, stay_nb), ext.ravel()])
        m = min(beam, scores.shape[0])
        top = np.argpartition(-scores, m - 1)[:m] if m < scores.shape[0] else np.arange(m)
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > NEG_INF] if np.isfinite(scores[top[0]]) else top[:1]
        new_prefixes, new_pb, new_pnb, new_last = [], [], [], []
        new_states, new_ctx = [], []
        for i in top.tolist():
            if i < n:
                new_prefixes.append(prefixes[i])
                new_pb.append(stay_b[i])
                new_pnb.append(stay_nb[i])
                new_last.append(last[i])
                if ext_ctx is not None:
                    new_states.append(ctx_states[i])
                    new_ctx.append(ctx[i])
            else:
                pi, j = divmod(i - n, len(tok))
                c = int(tok[j])
                new_prefixes.append(prefixes[pi] + (c,))
                new_pb.append(NEG_INF)
                new_pnb.append(ext[pi, j])
                new_last.append(c)
                if ext_ctx is not None:
                    new_states.append(steps[pi][j][1])
                    new_ctx.append(ext_ctx[pi, j])
        prefixes = new_prefixes
        pb, pnb, last = np.array(new_pb), np.array(new_pnb), np.array(new_last)
        if ext_ctx is not None:
            ctx_states, ctx = new_states, np.array(new_ctx)
    final = np.logaddexp(pb, pnb)
    if context is not None:
        final = final + ctx + np.array([context.finalize(st) for st in ctx_states])
    order = np.argsort(-final, kind="stable")
    return [(list(prefixes[i]), float(final[i])) for i in order]


# ---------------------------------------------------------------------------------------------
# Joint CTC prefix scoring for attention beam search
# ---------------------------------------------------------------------------------------------


class CTCPrefixScorer:
    """Prefix probabilities of one utterance's CTC posteriors, batched over hypotheses.

    A state is ``r`` [T, 2]: log-probabilities that the first t+1 frames emit exactly the
    prefix, ending in a non-blank (column 0) or a blank (column 1) frame. The prefix score
    ``psi`` sums over all frame positions where the last token can start, i.e. the
    probability of every label sequence that begins with the prefix.
    """

    def __init__(self, log_probs: np.ndarray, blank: int, eos: int) -> None:
        self.x = _to_numpy(log_probs).astype(np.float64)
        self.T = self.x.shape[0]
        self.blank = blank
        self.eos = eos

    def initial_state(self) -> np.ndarray:
        r = np.full((self.T, 2), NEG_INF)
        r[:, 1] = np.cumsum(self.x[:, self.blank])
        return r

    def score(
        self, out_len: int, last: np.ndarray, r_prev: np.ndarray, cands: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score candidate tokens ``cands`` [N, K] after N prefixes of ``out_len`` tokens.

        ``last`` [N] is each prefix's last token (-1 for the empty prefix), ``r_prev`` their
        states [N, T, 2]. Returns (psi [N, K], new states [N, K, T, 2]).
        """
        T, x = self.T, self.x
        n, k = cands.shape
        xs = np.moveaxis(x[:, cands], 0, -1)  # [N, K, T]
        r = np.full((n, k, T, 2), NEG_INF)
        if out_len == 0:
            r[:, :, 0, 0] = xs[:, :, 0]
        r_sum = np.logaddexp(r_prev[..., 0], r_prev[..., 1])  # [N, T]
        # a repeated token can only follow a blank-ending path of the prefix
        same = (cands == last[:, None])[..., None]
        log_phi = np.where(same, r_prev[:, None, :, 1], r_sum[:, None, :])  # [N, K, T]
        start = max(out_len, 1)
        x_blank = x[:, self.blank]
        for t in range(start, T):
            r[:, :, t, 0] = np.logaddexp(r[:, :, t - 1, 0], log_phi[:, :, t - 1]) + xs[:, :, t]
            r[:, :, t, 1] = np.logaddexp(r[:, :, t - 1, 0], r[:, :, t - 1, 1]) + x_blank[t]
        # psi = r[start-1, 0] (+) sum_t phi[t-1] + x[t]: the last token starting at frame t
        terms = log_phi[:, :, start - 1 : T - 1] + xs[:, :, start:T]
        psi = r[:, :, start - 1, 0]
        if terms.shape[-1]:
            psi = np.logaddexp(psi, _logsumexp(terms, axis=-1))
        # eos: the prefix is complete, i.e. all frames consumed
        psi = np.where(cands == self.eos, r_sum[:, -1][:, None], psi)
        psi = np.where(cands == self.blank, NEG_INF, psi)
        return psi, r


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m_safe), axis=axis, keepdims=True)) + m_safe
    return np.squeeze(out, axis=axis)


# ---------------------------------------------------------------------------------------------
# Searches over a Scorer (torch model or ONNX Runtime sessions)
# ---------------------------------------------------------------------------------------------


def attention_beam_search(
    scorer: Scorer,
    enc: Any,
    enc_len: int,
    ctc_log_probs: np.ndarray | None,
    beam: int = 10,
    ctc_beam: int = 15,
    ctc_weight: float = 0.3,
    penalty: float = 0.0,
    maxlenratio: float = 0.0,
    minlenratio: float = 0.0,
    context: ContextGraph | None = None,
) -> list[tuple[list[int], float]]:
    """Label-synchronous beam search with the attention decoder and joint CTC prefix scores.

    ``enc`` is one utterance's encoder output as returned by ``scorer.take`` ([1, T', A]),
    ``ctc_log_probs`` its [T', V] CTC log-probs (trimmed). Per step, each running hypothesis
    proposes its ``ctc_beam`` best tokens by attention score; those are rescored with
    ``(1 - ctc_weight) * att + ctc_weight * delta(CTC prefix score) + penalty`` and the best
    ``beam`` continuations over all hypotheses survive. Returns ended hypotheses, best first.

    With a hotword ``context`` graph, each hypothesis carries its context state: a candidate
    token adds its bonus change in full (like rescoring does), and eos withdraws an unfinished
    match, so ended hypotheses' scores include their whole bonus.
    """
    sos = eos = scorer.eos
    blank = BLANK
    maxlen = enc_len if maxlenratio <= 0 else max(1, int(maxlenratio * enc_len))
    minlen = int(minlenratio * enc_len)
    use_ctc = ctc_weight > 0.0 and ctc_log_probs is not None
    ctc = CTCPrefixScorer(ctc_log_probs[:enc_len], blank, eos) if use_ctc else None

    seqs = np.array([[sos]], dtype=np.int64)  # running prefixes, sos first
    scores = np.zeros(1)
    ctc_states = ctc.initial_state()[None] if ctc else None
    ctc_prev = np.zeros(1)
    ctx_states = [context.start] if context is not None else []
    # without a length or hotword bonus every step adds a score <= 0, so once an ended
    # hypothesis leads, no running one can overtake it any more
    can_grow = penalty > 0.0 or context is not None
    ended: list[tuple[list[int], float]] = []
    ended_by_len: dict[int, float] = {}
    decoder = _NextToken(scorer, enc, enc_len)
    for i in range(maxlen + 1):
        n, L = seqs.shape
        att = decoder.logprobs(seqs)
        att[:, blank] = NEG_INF  # the decoder never emits blank
        if i < minlen:
            att[:, eos] = NEG_INF
        if i == maxlen:  # out of length: every running hypothesis must end now
            keep = att[:, eos].copy()
            att[:] = NEG_INF
            att[:, eos] = keep
        k = min(ctc_beam if use_ctc else beam, att.shape[1])
        cands = np.argsort(-att, axis=1, kind="stable")[:, :k]  # [n, k]
        local = np.take_along_axis(att, cands, axis=1)
        if ctc is not None:
            last = seqs[:, -1] if L > 1 else np.full(n, -1, dtype=np.int64)
            psi, new_states = ctc.score(L - 1, last, ctc_states, cands)
            with np.errstate(invalid="ignore"):
                local = (1.0 - ctc_weight) * local + ctc_weight * (psi - ctc_prev[:, None])
            # -inf - -inf (a prefix CTC cannot produce at all) is NaN: treat it as impossible
            local = np.where(np.isnan(local), NEG_INF, local)
        total = scores[:, None] + local + penalty
        if context is not None:
            steps = [
                [
                    (context.finalize(st), st) if c == eos else context.step(st, c)
                    for c in row.tolist()
                ]
                for st, row in zip(ctx_states, cands, strict=True)
            ]
            total = total + np.array([[d for d, _ in row] for row in steps])
        flat = np.argsort(-total, axis=None, kind="stable")[:beam]
        h_idx, c_idx = np.unravel_index(flat, total.shape)
        run_h, run_c = [], []
        for h, c in zip(h_idx.tolist(), c_idx.tolist(), strict=True):
            s = float(total[h, c])
            if s == NEG_INF:
                continue
            tok = int(cands[h, c])
            if tok == eos:
                ended.append((seqs[h, 1:].tolist(), s))
                ended_by_len[i] = max(ended_by_len.get(i, NEG_INF), s)
            else:
                run_h.append(h)
                run_c.append(c)
        if not run_h:
            break
        best_ended = max((s for _, s in ended), default=NEG_INF)
        new_scores = total[run_h, run_c]
        if not can_grow and best_ended >= new_scores.max():
            break
        if can_grow and _end_detected(ended_by_len, best_ended, i):
            break
        seqs = np.concatenate([seqs[run_h], cands[run_h, run_c][:, None]], axis=1)
        decoder.keep(np.asarray(run_h, dtype=np.int64))
        scores = new_scores
        if context is not None:
            ctx_states = [steps[h][c][1] for h, c in zip(run_h, run_c, strict=True)]
        if ctc is not None:
            ctc_states = new_states[run_h, run_c]
            ctc_prev = psi[run_h, run_c]
    if not ended:  # cannot happen with maxlen >= 0, kept as a guard
        ended = [(seqs[0, 1:].tolist(), float(scores[0]))]
    ended.sort(key=lambda x: x[1], reverse=True)
    return ended


class _NextToken:
    """Next-token attention log-probabilities of running hypotheses (float64 [n, V]).

    With an incremental scorer, the source keys/values are computed once and each step feeds
    only the newest token of every hypothesis over a key/value cache that ``keep`` reorders
    like the hypotheses; otherwise the whole prefix is decoded again at every step.
    """

    def __init__(self, scorer: Scorer, enc: Any, enc_len: int) -> None:
        self.scorer = scorer
        self.enc = enc  # one row, broadcast over the hypotheses
        self.enc_lens = np.array([enc_len], dtype=np.int64)
        self.incremental = bool(getattr(scorer, "incremental", False))
        if self.incremental:
            self.memory = scorer.decoder_memory(enc, self.enc_lens)
        self.cache = None

    def logprobs(self, seqs: np.ndarray) -> np.ndarray:
        n, L = seqs.shape
        if not self.incremental:
            out = self.scorer.decoder_logprobs(
                seqs, np.full(n, L, dtype=np.int64), self.enc, self.enc_lens
            )
            return out[:, -1, :].astype(np.float64)
        out, self.cache = self.scorer.decoder_step(
            seqs[:, -1:],
            np.full((n, 1), L - 1, dtype=np.int64),
            np.ones((n, 1, L), dtype=np.bool_),
            self.cache,
            self.memory,
        )
        return out[:, 0, :].astype(np.float64)

    def keep(self, index: np.ndarray) -> None:
        """The hypotheses that go on, by their row in the last ``logprobs`` call."""
        if self.cache is not None:
            self.cache = self.scorer.take_cache(self.cache, index)


def _end_detected(ended_by_len: dict[int, float], best: float, i: int, m: int = 3) -> bool:
    """With a length bonus scores can grow, so stop once the last ``m`` lengths ended only
    hypotheses far (e^-10) below the best one."""
    if i < m:
        return False
    return all(ended_by_len.get(i - j, NEG_INF) - best < -10.0 for j in range(m))


def rescore_nbest(
    scorer: Scorer,
    enc: Any,
    enc_lens: np.ndarray,
    nbests: list[list[tuple[list[int], float]]],
    ctc_weight: float,
    context: ContextGraph | None = None,
) -> list[list[int]]:
    """Attention rescoring of CTC n-best lists, one decoder call per utterance for its n-best.

    score = ctc_weight * ctc + (1 - ctc_weight) * att, where att sums the decoder's
    log-probabilities of the hypothesis followed by eos. With a hotword ``context`` the CTC
    scores already hold each hypothesis' bonus; the decoder's share gets it too, so the bonus
    counts in full whatever ``ctc_weight`` is.
    """
    best: list[list[int]] = [[] for _ in nbests]
    for b, nbest in enumerate(nbests):
        if not nbest:
            continue
        hyps = [h for h, _ in nbest]
        idx = np.array([b], dtype=np.int64)
        att = hypothesis_logprobs(scorer, scorer.take(enc, idx), enc_lens[idx], hyps)
        ctc = np.array([s for _, s in nbest])
        if context is not None:
            att = att + np.array([context.score(h) for h in hyps])
        total = ctc_weight * ctc + (1.0 - ctc_weight) * att
        best[b] = hyps[int(np.argmax(total))]
    return best


def hypothesis_logprobs(
    scorer: Scorer, enc: Any, enc_lens: np.ndarray, hyps: list[list[int]]
) -> np.ndarray:
    """float64 [n]: the decoder's log-probability of each hypothesis followed by eos, all
    against one encoder row ``enc`` [1, T', A] (computed once, broadcast to every hypothesis).

    With an incremental scorer the hypotheses are merged into a prefix tree and every tree
    node (a distinct prefix) is decoded once, all in one call: each node attends to its
    ancestors only (a tree mask) at its own depth. N-best lists share most of their prefixes,
    so this decodes far fewer positions than one padded row per hypothesis.
    """
    sos = eos = scorer.eos
    n, L = len(hyps), max(len(h) for h in hyps) + 1
    ys_out = np.full((n, L), eos, dtype=np.int64)
    for j, h in enumerate(hyps):
        ys_out[j, : len(h)] = h
    ys_lens = np.array([len(h) + 1 for h in hyps], dtype=np.int64)
    if getattr(scorer, "incremental", False):
        picked = _tree_logprobs(scorer, enc, enc_lens, hyps, ys_out)
    else:
        ys_in = np.full((n, L), eos, dtype=np.int64)
        ys_in[:, 0] = sos
        ys_in[:, 1:] = ys_out[:, :-1]
        logp = scorer.decoder_logprobs(ys_in, ys_lens, enc, enc_lens)
        picked = np.take_along_axis(np.asarray(logp), ys_out[:, :, None], axis=2)[..., 0]
    valid = np.arange(L)[None, :] < ys_lens[:, None]
    return np.where(valid, picked.astype(np.float64), 0.0).sum(axis=1)


# Tree nodes decoded per call: bounds the [S, P+S] attention of long n-best lists; a later
# chunk attends to the earlier ones through the key/value cache.
TREE_CHUNK = 512


def _tree_logprobs(
    scorer: Scorer, enc: Any, enc_lens: np.ndarray, hyps: list[list[int]], ys_out: np.ndarray
) -> np.ndarray:
    """[n, L] float32: log p(ys_out[j, i] | sos + hyps[j][:i]) via the prefix tree (entries
    past a hypothesis' eos are garbage)."""
    sos = scorer.eos
    tokens, parent = [sos], [-1]
    children: list[dict[int, int]] = [{}]
    paths = np.zeros(ys_out.shape, dtype=np.int64)  # tree node of each hypothesis position
    for j, h in enumerate(hyps):
        node = 0
        for i, tok in enumerate(h):
            nxt = children[node].get(tok)
            if nxt is None:
                nxt = len(tokens)
                children[node][tok] = nxt
                children.append({})
                tokens.append(tok)
                parent.append(node)
            paths[j, i + 1] = node = nxt
    u = len(tokens)
    # a node sees itself and its ancestors (parents come before their children)
    mask = np.zeros((u, u), dtype=np.bool_)
    depth = np.zeros(u, dtype=np.int64)
    for v in range(u):
        if v:
            mask[v] = mask[parent[v]]
            depth[v] = depth[parent[v]] + 1
        mask[v, v] = True
    ys = np.asarray(tokens, dtype=np.int64)
    memory = scorer.decoder_memory(enc, enc_lens)
    cache = None
    node_logp = []
    for start in range(0, u, TREE_CHUNK):
        end = min(u, start + TREE_CHUNK)
        out, cache = scorer.decoder_step(
            ys[None, start:end], depth[None, start:end], mask[None, start:end, :end], cache, memory
        )
        node_logp.append(out[0])
    logp = np.concatenate(node_logp) if len(node_logp) > 1 else node_logp[0]
    return logp[paths, ys_out]


def decode_batch(
    scorer: Scorer,
    feats: np.ndarray,
    lens: np.ndarray,
    cfg: DecodeConfig,
    context: ContextGraph | None = None,
    posteriors: list[np.ndarray] | None = None,
) -> list[list[int]]:
    """Decode a padded feature batch [B, T, D] with the search ``cfg.mode``: the encoder runs
    once for the batch, rescoring runs once for all n-best lists of the batch.

    ``context`` (hotwords) biases the CTC prefix beam search and attention rescoring; the
    other modes refuse it. If ``posteriors`` is a list, each utterance's CTC log-probs
    [T', V] (trimmed to its length) are appended to it (for timestamps and confidences).
    """
    enc, enc_lens, ctc_lp = scorer.encode(feats, lens)
    enc_lens = np.asarray(enc_lens, dtype=np.int64)
    if posteriors is not None:
        lp = _to_numpy(ctc_lp)
        posteriors.extend(lp[b, : int(enc_lens[b])] for b in range(len(enc_lens)))
    if context is not None and cfg.mode not in HOTWORD_MODES:
        raise ValueError(f"hotwords {hotword_mode_error(cfg.mode)}")
    if cfg.mode == "ctc_greedy":
        return ctc_greedy(ctc_lp, enc_lens)
    if cfg.mode in ("ctc_prefix_beam", "attention_rescoring"):
        nbests = [
            ctc_prefix_beam(ctc_lp[b], int(enc_lens[b]), beam=cfg.ctc_beam, context=context)
            for b in range(len(enc_lens))
        ]
        if cfg.mode == "ctc_prefix_beam":
            return [nb[0][0] if nb else [] for nb in nbests]
        return rescore_nbest(
            scorer, enc, enc_lens, [nb[: cfg.beam] for nb in nbests], cfg.ctc_weight, context
        )
    if cfg.mode == "attention":
        out = []
        for b in range(len(enc_lens)):
            n = int(enc_lens[b])
            hyps = attention_beam_search(
                scorer,
                scorer.take(enc, np.array([b], dtype=np.int64)),
                n,
                ctc_lp[b, :n],
                beam=cfg.beam,
                ctc_beam=cfg.ctc_beam,
                ctc_weight=cfg.ctc_weight,
                penalty=cfg.penalty,
                maxlenratio=cfg.maxlenratio,
                minlenratio=cfg.minlenratio,
                context=context,
            )
            out.append(hyps[0][0])
        return out
    raise ValueError(f"unknown decoding mode {cfg.mode!r}")
