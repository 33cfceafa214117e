"""Pre-norm attention-decoder block (ESPnet1 DecoderLayer: norm1/2/3, self_attn, src_attn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    def forward_step(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        mem_k: torch.Tensor,
        mem_v: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Incremental form of `forward` for `S` new positions `x [N, S, d]`.

        `cache_k/v [N, H, P, d_k]` are the self-attention keys/values of the `P` positions
        already decoded, `mask [N, 1, S, P+S]` says which of the `P+S` keys each new position
        sees, `mem_k/v [B, H, T', d_k]` are the source-attention keys/values of the encoder
        output (see `Decoder.memory_kv`), B = N (one row each) or 1 (shared by all), and
        `memory_mask [B, 1, 1, T']`. Returns `(x, keys, values)` with the keys
        and values of all `P+S` positions.
        """
        h = self.norm1(x)
        q, k, v = self.self_attn.forward_qkv(h, h, h)
        k = torch.cat([cache_k, k], dim=2)
        v = torch.cat([cache_v, v], dim=2)
        x = x + self.dropout(self.self_attn.attend(q, k, v, mask))
        h = self.norm2(x)
        att = self.src_attn
        n, s, b = h.size(0), h.size(1), mem_k.size(0)
        # The hypotheses that share an encoder row (all of them when b == 1) become query rows
        # of one attention instead of a broadcast over a batch of single queries: one matmul.
        q = att.linear_q(h).view(b, (n // b) * s, att.h, att.d_k).transpose(1, 2)
        p = att.dropout_rate if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, mem_k, mem_v, attn_mask=memory_mask, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(n, s, att.h * att.d_k)
        x = x + self.dropout(att.linear_out(ctx))
        return x + self.dropout(self.feed_forward(self.norm3(x))), k, v
