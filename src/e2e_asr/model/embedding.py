"""Sinusoidal positional encodings (ESPnet1 formulas), precomputed for export.

The tables are fixed-size buffers sliced by the (traced) sequence length, so an ONNX graph
works for any length up to `max_len` frames after subsampling (5000 by default: 200 s of
audio at 10 ms frames and x4 subsampling). They are not saved in the state_dict, as in ESPnet.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from e2e_asr.model.dropout import Dropout

DEFAULT_MAX_LEN = 5000


def sinusoid_table(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """`[len(positions), d_model]`: sin on even, cos on odd channels."""
    channels = torch.arange(0, d_model, 2, dtype=torch.float32)
    div = torch.exp(channels * -(math.log(10000.0) / d_model))
    angles = positions.to(torch.float32).unsqueeze(1) * div
    table = torch.zeros(len(positions), d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


def _check_length(length: int, max_len: int) -> None:
    # Only in eager mode: a traced graph must not carry a Python branch on the length.
    if not torch.jit.is_tracing() and length > max_len:
        raise ValueError(
            f"sequence of {length} frames is longer than the positional table ({max_len}); "
            "split the utterance or raise max_len"
        )


class PositionalEncoding(nn.Module):
    """Absolute encoding: `x * sqrt(d) + PE[:T]`, then dropout."""

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = DEFAULT_MAX_LEN) -> None:
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len
        self.dropout = Dropout(dropout_rate)
        pe = sinusoid_table(torch.arange(max_len), d_model).unsqueeze(0)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_length(x.size(1), self.max_len)
        return self.dropout(x * self.xscale + self.pe[:, : x.size(1)].to(x.dtype))

    def at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`x [N, S, d]` at explicit `positions [N, S]` (incremental decoding: each new token
        at its own position): the same `x * sqrt(d) + PE[pos]` as `forward`."""
        return self.dropout(x * self.xscale + self.pe[0][positions].to(x.dtype))


class RelPositionalEncoding(nn.Module):
    """ESPnet "latest" relative encoding: returns `(dropout(x * sqrt(d)), pos_emb)`.

    `pos_emb` is `[1, 2T-1, d]` for relative positions T-1 down to -(T-1), the layout that
    `RelPositionMultiHeadedAttention.rel_shift` expects.
    """

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = DEFAULT_MAX_LEN) -> None:
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len
        self.dropout = Dropout(dropout_rate)
        positions = torch.arange(max_len - 1, -max_len, -1)
        pe = sinusoid_table(positions, d_model).unsqueeze(0)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = x.size(1)
        _check_length(length, self.max_len)
        # Row max_len-1 of the table is relative position 0.
        pos_emb = self.pe[:, self.max_len - length : self.max_len - 1 + length].to(x.dtype)
        return self.dropout(x * self.xscale), self.dropout(pos_emb)


class LegacyRelPositionalEncoding(nn.Module):
    """ESPnet's `LegacyRelPositionalEncoding`: returns `(dropout(x * sqrt(d)), pos_emb)`.

    ESPnet builds its table once for `max_len` (5000) positions in reverse order,
    max_len-1 .. 0, and takes the first T rows: `pos_emb` is `[1, T, d]` for positions
    max_len-1 down to max_len-T (not T-1 .. 0). The legacy rel_shift then scores query i
    against key j <= i at position max_len-T+i-j, so the result depends on the padded length
    T, as in ESPnet. Keep `max_len` at ESPnet's 5000 for imported models.
    """

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = DEFAULT_MAX_LEN) -> None:
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len
        self.dropout = Dropout(dropout_rate)
        pe = sinusoid_table(torch.arange(max_len - 1, -1, -1), d_model).unsqueeze(0)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_length(x.size(1), self.max_len)
        pos_emb = self.pe[:, : x.size(1)].to(x.dtype)
        return self.dropout(x * self.xscale), self.dropout(pos_emb)


class WenetRelPositionalEncoding(nn.Module):
    """WeNet's `RelPositionalEncoding`: `(dropout(x * sqrt(d)), pos_emb)` with `pos_emb` the
    absolute table at positions 0 .. T-1 `[1, T, d]` (not added to x)."""

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = DEFAULT_MAX_LEN) -> None:
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.max_len = max_len
        self.dropout = Dropout(dropout_rate)
        pe = sinusoid_table(torch.arange(max_len), d_model).unsqueeze(0)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_length(x.size(1), self.max_len)
        pos_emb = self.pe[:, : x.size(1)].to(x.dtype)
        return self.dropout(x * self.xscale), self.dropout(pos_emb)
