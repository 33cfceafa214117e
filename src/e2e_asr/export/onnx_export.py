"""ONNX graphs of the encoder (+ CMVN + CTC) and of the attention decoder, whole-prefix
(``decoder.onnx``) and incremental (``decoder_memory.onnx`` + ``decoder_step.onnx``).

Both use the classic TorchScript-based exporter (``dynamo=False``): it needs no extra
dependencies and handles the models' data-dependent masks with dynamic axes. The tensor names
are the ones ``e2e_asr.decode.onnx_scorer`` expects.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from e2e_asr.data.io import atomic_path
from e2e_asr.decode.onnx_scorer import (
    DECODER_INPUTS,
    DECODER_MEMORY_INPUTS,
    DECODER_MEMORY_OUTPUTS,
    DECODER_OUTPUTS,
    DECODER_STEP_INPUTS,
    DECODER_STEP_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
)
from e2e_asr.model import E2EModel

OPSET = 17


class EncoderGraph(nn.Module):
    """feats [B, T, D], feat_lens [B] -> enc [B, T', A], enc_lens [B], ctc_logp [B, T', V]."""

    def __init__(self, model: E2EModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc, enc_lens = self.model.encode(feats, feat_lens)
        return enc, enc_lens, self.model.ctc_log_probs(enc)


class DecoderGraph(nn.Module):
    """ys_in [N, L], ys_in_lens [N], enc [N, T', A], enc_lens [N] -> logp [N, L, V]."""

    def __init__(self, model: E2EModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        ys_in: torch.Tensor,
        ys_in_lens: torch.Tensor,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.decoder_logprobs(ys_in, ys_in_lens, enc, enc_lens)


class DecoderMemoryGraph(nn.Module):
    """enc [B, T', A] -> mem_k, mem_v [blocks, B, H, T', d_k] (source-attention keys/values)."""

    def __init__(self, model: E2EModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decoder_memory(enc)


class DecoderStepGraph(nn.Module):
    """ys [N, S], positions [N, S], mask [N, S, P+S] (bool), cache_k/v [blocks, N, H, P, d_k],
    mem_k/v [blocks, B, H, T', d_k], enc_lens [B] -> logp [N, S, V],
    new_cache_k/v [blocks, N, H, P+S, d_k] (B is N or 1)."""

    def __init__(self, model: E2EModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        ys: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        mem_k: torch.Tensor,
        mem_v: torch.Tensor,
        enc_lens: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.decoder_step(
            ys, positions, mask, cache_k, cache_v, mem_k, mem_v, enc_lens
        )


def _export(module: nn.Module, args: tuple, inputs, outputs, dynamic: dict, path: Path) -> None:
    """Export to a temp file beside ``path`` and rename, so a crash leaves no partial graph."""
    import onnx

    with atomic_path(path) as tmp, warnings.catch_warnings():
        # the classic exporter is deprecated upstream and warns about constant folding
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        onnx.checker.check_model(str(tmp))


def export_model(
    model: E2EModel,
    out_dir: str | os.PathLike,
    batch: int = 2,
    frames: int = 200,
    tokens: int = 5,
) -> dict[str, Any]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``decoder_memory.onnx`` and
    ``decoder_step.onnx``; returns the export (tracing) shapes.

    The tracing batch is padded (second utterance shorter) so that masking is traced with
    real data; parity is later checked on other shapes (see ``parity.py``).
    """
    out = Path(out_dir)
    model = model.eval()
    torch.manual_seed(0)
    feats = torch.randn(batch, frames, model.idim)
    feat_lens = torch.tensor([frames] + [frames * 3 // 4] * (batch - 1), dtype=torch.int64)
    enc_graph = EncoderGraph(model).eval()
    _export(
        enc_graph,
        (feats, feat_lens),
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
        {
            "feats": {0: "batch", 1: "frames"},
            "feat_lens": {0: "batch"},
            "enc": {0: "batch", 1: "enc_frames"},
            "enc_lens": {0: "batch"},
            "ctc_logp": {0: "batch", 1: "enc_frames"},
        },
        out / "encoder.onnx",
    )
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, feat_lens)
    ys_in = torch.randint(1, model.odim - 1, (batch, tokens))
    ys_in[:, 0] = model.sos
    ys_lens = torch.tensor([tokens] + [max(1, tokens - 2)] * (batch - 1), dtype=torch.int64)
    _export(
        DecoderGraph(model).eval(),
        (ys_in, ys_lens, enc, enc_lens),
        DECODER_INPUTS,
        DECODER_OUTPUTS,
        {
            "ys_in": {0: "hyps", 1: "tokens"},
            "ys_in_lens": {0: "hyps"},
            # enc may have one row for all hypotheses of an utterance (broadcast), or one each
            "enc": {0: "enc_batch", 1: "enc_frames"},
            "enc_lens": {0: "enc_batch"},
            "logp": {0: "hyps", 1: "tokens"},
        },
        out / "decoder.onnx",
    )
    step = export_step(model, out, enc, enc_lens, tokens)
    return {
        "opset": OPSET,
        "encoder": {"feats": list(feats.shape), "feat_lens": feat_lens.tolist()},
        "decoder": {
            "ys_in": list(ys_in.shape),
            "ys_in_lens": ys_lens.tolist(),
            "enc": list(enc.shape),
        },
        "decoder_step": step,
    }


def export_step(
    model: E2EModel, out: Path, enc: torch.Tensor, enc_lens: torch.Tensor, tokens: int
) -> dict[str, Any]:
    """Write ``decoder_memory.onnx`` and ``decoder_step.onnx`` (the incremental decoder).

    The step graph is traced with a non-empty cache, several new positions per hypothesis, a
    tree-shaped mask and a broadcast encoder row, so none of those sizes becomes a constant;
    it then serves beam steps (one new position over a growing cache) and prefix trees (all
    nodes at once over an empty cache) alike.
    """
    _export(
        DecoderMemoryGraph(model).eval(),
        (enc[:1],),
        DECODER_MEMORY_INPUTS,
        DECODER_MEMORY_OUTPUTS,
        {
            "enc": {0: "enc_batch", 1: "enc_frames"},
            "mem_k": {1: "enc_batch", 3: "enc_frames"},
            "mem_v": {1: "enc_batch", 3: "enc_frames"},
        },
        out / "decoder_memory.onnx",
    )
    with torch.no_grad():
        mem_k, mem_v = model.decoder_memory(enc[:1])
    hyps, cached, new = 3, 2, max(2, tokens - 2)
    blocks, _, heads, _, d_k = mem_k.shape
    torch.manual_seed(1)
    cache_k = torch.randn(blocks, hyps, heads, cached, d_k)
    cache_v = torch.randn(blocks, hyps, heads, cached, d_k)
    ys = torch.randint(1, model.odim - 1, (hyps, new))
    positions = torch.arange(cached, cached + new).repeat(hyps, 1)
    mask = torch.ones(hyps, new, cached + new, dtype=torch.bool).tril(cached)
    mask[:, -1, cached] = False  # not causal: a tree mask
    _export(
        DecoderStepGraph(model).eval(),
        (ys, positions, mask, cache_k, cache_v, mem_k, mem_v, enc_lens[:1]),
        DECODER_STEP_INPUTS,
        DECODER_STEP_OUTPUTS,
        {
            "ys": {0: "hyps", 1: "new"},
            "positions": {0: "hyps", 1: "new"},
            "mask": {0: "hyps", 1: "new", 2: "total"},
            "cache_k": {1: "hyps", 3: "cached"},
            "cache_v": {1: "hyps", 3: "cached"},
            "mem_k": {1: "enc_batch", 3: "enc_frames"},
            "mem_v": {1: "enc_batch", 3: "enc_frames"},
            "enc_lens": {0: "enc_batch"},
            "logp": {0: "hyps", 1: "new"},
            "new_cache_k": {1: "hyps", 3: "total"},
            "new_cache_v": {1: "hyps", 3: "total"},
        },
        out / "decoder_step.onnx",
    )
    return {
        "ys": list(ys.shape),
        "cache_k": list(cache_k.shape),
        "mem_k": list(mem_k.shape),
    }
