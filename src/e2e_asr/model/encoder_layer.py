"""Pre-norm encoder blocks: Transformer (ESPnet1 EncoderLayer) and Conformer."""

from __future__ import annotations

import torch
from torch import nn

from e2e_asr.model.attention import MultiHeadedAttention
from e2e_asr.model.convolution import ConvolutionModule
from e2e_asr.model.dropout import Dropout
from e2e_asr.model.feed_forward import PositionwiseFeedForward

LAYER_NORM_EPS = 1e-12  # ESPnet's LayerNorm; matters for bit-faithful loading of its models


class TransformerEncoderLayer(nn.Module):
    """`x + drop(self_attn(norm1(x)))`, then `x + drop(feed_forward(norm2(x)))`."""

    def __init__(
        self,
        size: int,
        self_attn: MultiHeadedAttention,
        feed_forward: PositionwiseFeedForward,
        dropout_rate: float,
        norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.norm1 = nn.LayerNorm(size, eps=norm_eps)
        self.norm2 = nn.LayerNorm(size, eps=norm_eps)
        self.dropout = Dropout(dropout_rate)

    def forward(
        self,
        x: torch.Tensor,
        att_mask: torch.Tensor,
        pad_mask: torch.Tensor,
        pos_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`pad_mask` and `pos_emb` are unused; the signature matches the Conformer layer's."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, att_mask))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class ConformerEncoderLayer(nn.Module):
    """Macaron FF (1/2) -> MHSA -> conv module -> FF (1/2) -> final norm (ESPnet layout)."""

    def __init__(
        self,
        size: int,
        self_attn: MultiHeadedAttention,
        feed_forward: PositionwiseFeedForward,
        feed_forward_macaron: PositionwiseFeedForward | None,
        conv_module: ConvolutionModule | None,
        dropout_rate: float,
        norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.feed_forward_macaron = feed_forward_macaron
        self.conv_module = conv_module
        self.norm_ff = nn.LayerNorm(size, eps=norm_eps)
        self.norm_mha = nn.LayerNorm(size, eps=norm_eps)
        if feed_forward_macaron is not None:
            self.norm_ff_macaron = nn.LayerNorm(size, eps=norm_eps)
            self.ff_scale = 0.5
        else:
            self.ff_scale = 1.0
        if conv_module is not None:
            self.norm_conv = nn.LayerNorm(size, eps=norm_eps)
            self.norm_final = nn.LayerNorm(size, eps=norm_eps)
        self.dropout = Dropout(dropout_rate)

    def forward(
        self,
        x: torch.Tensor,
        att_mask: torch.Tensor,
        pad_mask: torch.Tensor,
        pos_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.feed_forward_macaron is not None:
            x = x + self.ff_scale * self.dropout(self.feed_forward_macaron(self.norm_ff_macaron(x)))
        h = self.norm_mha(x)
        if pos_emb is not None:
            x = x + self.dropout(self.self_attn(h, h, h, pos_emb, att_mask))
        else:
            x = x + self.dropout(self.self_attn(h, h, h, att_mask))
        if self.conv_module is not None:
            x = x + self.dropout(self.conv_module(self.norm_conv(x), pad_mask))
        x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        if self.conv_module is not None:
            x = self.norm_final(x)
        return x
