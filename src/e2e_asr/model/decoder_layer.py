"""Pre-norm attention-decoder block (ESPnet1 DecoderLayer: norm1/2/3, self_attn, src_attn)."""

from __future__ import annotations

import torch
from torch import nn

from e2e_asr.model.attention import MultiHeadedAttention
from e2e_asr.model.dropout import Dropout
from e2e_asr.model.encoder_layer import LAYER_NORM_EPS
from e2e_asr.model.feed_forward import PositionwiseFeedForward


class DecoderLayer(nn.Module):
    def __init__(
        self,
        size: int,
        self_attn: MultiHeadedAttention,
        src_attn: MultiHeadedAttention,
        feed_forward: PositionwiseFeedForward,
        dropout_rate: float,
        norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.norm1 = nn.LayerNorm(size, eps=norm_eps)
        self.norm2 = nn.LayerNorm(size, eps=norm_eps)
        self.norm3 = nn.LayerNorm(size, eps=norm_eps)
        self.dropout = Dropout(dropout_rate)

    def forward(
        self,
        x: torch.Tensor,
        tgt_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, tgt_mask))
        h = self.norm2(x)
        x = x + self.dropout(self.src_attn(h, memory, memory, memory_mask))
        return x + self.dropout(self.feed_forward(self.norm3(x)))
