"""Numerical parity of the ONNX graphs with the PyTorch model, on shapes other than the
export shapes (batch 1 and 3, lengths unlike the tracing length, padded batches).

A graph that baked a traced length or batch into a constant fails here instead of in a
user's decode. Only valid (unpadded) positions are compared: padded frames are garbage by
design and nobody reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from e2e_asr.decode.onnx_scorer import OnnxScorer
from e2e_asr.decode.scoring import EditStats, edit_stats
from e2e_asr.decode.search import ctc_greedy
from e2e_asr.decode.torch_scorer import TorchScorer
from e2e_asr.model import E2EModel

FP32_TOLERANCE = 1e-4

# (feature lengths of one batch): batch 1 and 3, lengths unlike the tracing length, padding
ENCODER_CASES: tuple[tuple[int, ...], ...] = ((37,), (413,), (311, 250, 97), (64, 64, 64))
# (hypothesis lengths incl. sos, feature length of the utterance they are scored against,
#  whether one encoder row is broadcast over the hypotheses)
DECODER_CASES: tuple[tuple[tuple[int, ...], int, bool], ...] = (
    ((1,), 90, False),
    ((9,), 233, False),
    ((7, 3, 12), 150, False),
    ((5, 11, 2, 8), 177, True),
)


# incremental decoder: (hypotheses, beam steps from an empty cache, feature length) with one
# broadcast encoder row, and (tree node parents, feature length): a prefix tree in one call
STEP_CASES: tuple[tuple[int, int, int], ...] = ((1, 4, 61), (4, 3, 177))
TREE_CASES: tuple[tuple[tuple[int, ...], int], ...] = (((-1, 0, 1, 1, 0, 4, 5, 2), 143),)


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce the PyTorch model."""


@dataclass
class ParityReport:
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    lengths_equal: bool = True
    greedy_agreement: float = 1.0  # fraction of utterances with identical CTC greedy output
    greedy_token_error: float = 0.0  # % edits of the ONNX greedy output against PyTorch's
    cases: list[str] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in self.max_abs_diff.items()},
            "lengths_equal": self.lengths_equal,
            "greedy_agreement": round(self.greedy_agreement, 4),
            "greedy_token_error": round(self.greedy_token_error, 3),
            "cases": self.cases,
        }


def _feats(model: E2EModel, lengths: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random features on the model's own scale (inverse of its CMVN), zero padded."""
    mean = model.global_cmvn.mean.detach().numpy()
    istd = model.global_cmvn.istd.detach().numpy()
    x = rng.standard_normal((len(lengths), max(lengths), model.idim)).astype(np.float32)
    x = x / istd + mean
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x.astype(np.float32)


def _update(report: ParityReport, name: str, diff: float) -> None:
    report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), diff)


def compare(model: E2EModel, onnx_scorer: OnnxScorer, seed: int = 0) -> ParityReport:
    """Max abs differences of encoder output, CTC log-probs and decoder log-probs, and of the
    incremental decoder's source keys/values and log-probs when the scorer has it."""
    torch_scorer = TorchScorer(model)
    rng = np.random.default_rng(seed)
    report = ParityReport()
    agree = total = 0
    edits = EditStats()
    for lengths in ENCODER_CASES:
        feats = _feats(model, lengths, rng)
        lens = np.asarray(lengths, dtype=np.int64)
        t_enc, t_lens, t_lp = torch_scorer.encode(feats, lens)
        o_enc, o_lens, o_lp = onnx_scorer.encode(feats, lens)
        t_enc = t_enc.numpy()
        report.cases.append(f"encoder batch {len(lengths)} lengths {list(lengths)}")
        if not np.array_equal(t_lens, o_lens) or t_enc.shape != o_enc.shape:
            report.lengths_equal = False
            continue
        for b, n in enumerate(t_lens.tolist()):
            _update(report, "enc", float(np.abs(t_enc[b, :n] - o_enc[b, :n]).max()))
            _update(report, "ctc_logp", float(np.abs(t_lp[b, :n] - o_lp[b, :n]).max()))
        t_hyp, o_hyp = ctc_greedy(t_lp, t_lens), ctc_greedy(o_lp, o_lens)
        agree += sum(a == b for a, b in zip(t_hyp, o_hyp, strict=True))
        total += len(t_hyp)
        for a, b in zip(t_hyp, o_hyp, strict=True):
            edits.add(edit_stats([str(x) for x in a], [str(x) for x in b]))
    report.greedy_agreement = agree / max(total, 1)
    report.greedy_token_error = edits.error_rate
    for ys_lengths, frames, broadcast in DECODER_CASES:
        feats = _feats(model, (frames,), rng)
        enc, enc_lens, _ = torch_scorer.encode(feats, np.array([frames], dtype=np.int64))
        n = len(ys_lengths)
        idx = np.zeros(n, dtype=np.int64)
        ys = rng.integers(1, model.odim - 1, size=(n, max(ys_lengths)), dtype=np.int64)
        ys[:, 0] = model.sos
        ys_lens = np.asarray(ys_lengths, dtype=np.int64)
        for b, m in enumerate(ys_lengths):
            ys[b, m:] = model.eos  # the padding the searches use
        if broadcast:  # one encoder row for all hypotheses, as the searches call it
            idx = idx[:1]
        t_lp = torch_scorer.decoder_logprobs(
            ys, ys_lens, torch_scorer.take(enc, idx), enc_lens[idx]
        )
        o_lp = onnx_scorer.decoder_logprobs(ys, ys_lens, enc.numpy()[idx], enc_lens[idx])
        report.cases.append(
            f"decoder hyps {n} lengths {list(ys_lengths)} frames {frames} enc rows {len(idx)}"
        )
        if t_lp.shape != o_lp.shape:
            report.lengths_equal = False
            continue
        for b, m in enumerate(ys_lengths):
            _update(report, "decoder_logp", float(np.abs(t_lp[b, :m] - o_lp[b, :m]).max()))
    if getattr(onnx_scorer, "incremental", False):
        _compare_step(model, torch_scorer, onnx_scorer, rng, report)
    return report


def _compare_step(
    model: E2EModel,
    torch_scorer: TorchScorer,
    onnx_scorer: OnnxScorer,
    rng: np.random.Generator,
    report: ParityReport,
) -> None:
    """decoder_memory + decoder_step: beam steps over a growing, reordered cache and a prefix
    tree decoded in one call, against PyTorch's incremental decoder."""
    for hyps, steps, frames in STEP_CASES:
        feats = _feats(model, (frames,), rng)
        enc, enc_lens, _ = torch_scorer.encode(feats, np.array([frames], dtype=np.int64))
        t_mem = torch_scorer.decoder_memory(enc, enc_lens)
        o_mem = onnx_scorer.decoder_memory(enc.numpy(), enc_lens)
        _update(report, "decoder_memory", float(np.abs(t_mem[0].numpy() - o_mem[0]).max()))
        report.cases.append(f"decoder_step hyps {hyps} steps {steps} frames {frames}")
        t_cache = o_cache = None
        for t in range(steps):
            ys = rng.integers(1, model.odim - 1, size=(hyps, 1), dtype=np.int64)
            args = (ys, np.full((hyps, 1), t), np.ones((hyps, 1, t + 1), dtype=np.bool_))
            t_lp, t_cache = torch_scorer.decoder_step(*args, t_cache, t_mem)
            o_lp, o_cache = onnx_scorer.decoder_step(*args, o_cache, o_mem)
            if t_lp.shape != o_lp.shape:
                report.lengths_equal = False
                break
            _update(report, "decoder_step_logp", float(np.abs(t_lp - o_lp).max()))
            keep = rng.integers(0, hyps, size=hyps)  # beam reordering, repeats included
            t_cache = torch_scorer.take_cache(t_cache, keep)
            o_cache = onnx_scorer.take_cache(o_cache, keep)
    for parents, frames in TREE_CASES:
        feats = _feats(model, (frames,), rng)
        enc, enc_lens, _ = torch_scorer.encode(feats, np.array([frames], dtype=np.int64))
        u = len(parents)
        mask = np.eye(u, dtype=np.bool_)
        depth = np.zeros(u, dtype=np.int64)
        for v, p in enumerate(parents):
            if p >= 0:
                mask[v] |= mask[p]
                depth[v] = depth[p] + 1
        ys = rng.integers(1, model.odim - 1, size=(1, u), dtype=np.int64)
        args = (ys, depth[None], mask[None], None)
        t_lp, _ = torch_scorer.decoder_step(*args, torch_scorer.decoder_memory(enc, enc_lens))
        o_lp, _ = onnx_scorer.decoder_step(*args, onnx_scorer.decoder_memory(enc.numpy(), enc_lens))
        report.cases.append(f"decoder_step tree of {u} nodes frames {frames}")
        if t_lp.shape != o_lp.shape:
            report.lengths_equal = False
            continue
        _update(report, "decoder_step_logp", float(np.abs(t_lp - o_lp).max()))


def check_fp32(model: E2EModel, onnx_scorer: OnnxScorer) -> ParityReport:
    """Raise ParityError unless every valid position is within FP32_TOLERANCE."""
    report = compare(model, onnx_scorer)
    if not report.lengths_equal:
        raise ParityError(
            "ONNX graphs give other output shapes/lengths than PyTorch on "
            f"{'; '.join(report.cases)}"
        )
    if report.worst > FP32_TOLERANCE:
        bad = {k: v for k, v in report.max_abs_diff.items() if v > FP32_TOLERANCE}
        raise ParityError(
            f"ONNX fp32 differs from PyTorch by more than {FP32_TOLERANCE}: {bad} "
            f"(cases: {'; '.join(report.cases)})"
        )
    return report
