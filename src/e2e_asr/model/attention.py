"""Multi-head attention on `scaled_dot_product_attention` (ESPnet1 state_dict names).

Masks are boolean, True where a key may be attended, broadcastable to `[B, H, Tq, Tk]`.
The relative-position variant folds its position term and the padding into one additive
float mask, so both variants use the same fused kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadedAttention(nn.Module):
    """`linear_q/k/v/out`; `kv_dim` lets decoder source attention read a wider encoder."""

    def __init__(
        self, n_head: int, n_feat: int, dropout_rate: float, kv_dim: int | None = None
    ) -> None:
        super().__init__()
        assert n_feat % n_head == 0
        kv_dim = n_feat if kv_dim is None else kv_dim
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(kv_dim, n_feat)
        self.linear_v = nn.Linear(kv_dim, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.dropout_rate = dropout_rate

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        return x.view(b, -1, self.h, self.d_k).transpose(1, 2)  # [B, H, T, d_k]

    def forward_qkv(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            self._heads(self.linear_q(query)),
            self._heads(self.linear_k(key)),
            self._heads(self.linear_v(value)),
        )

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        p = self.dropout_rate if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b = ctx.size(0)
        return self.linear_out(ctx.transpose(1, 2).reshape(b, -1, self.h * self.d_k))

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        q, k, v = self.forward_qkv(query, key, value)
        return self.attend(q, k, v, mask)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """`[B, H, T, 2T-1]` scores against relative positions T-1..-(T-1) -> `[B, H, T, T]`
    indexed by key position: out[i, j] = x[i, T-1-i+j]. Pad/reshape trick, no gather.

    On a `[B, H, T, T]` input this is ESPnet's legacy (Transformer-XL) shift: out[i, j] is
    x[i, T-1-i+j] for j <= i, 0 for j = i+1 and x[i+1, j-i-2] above that."""
    b, h, t, n = x.size()
    x = F.pad(x, (1, 0)).view(b, h, n + 1, t)
    return x[:, :, 1:].reshape(b, h, t, n)[:, :, :, :t]


REL_POS_SHIFT = {"rel_pos": True, "legacy_rel_pos": True, "wenet_rel_pos": False}


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Transformer-XL style attention: scores = (q+u) k^T + rel_shift((q+v) p^T), / sqrt(d_k).

    `variant` (a `pos_enc_layer_type`) says which positional table `p` comes with:
    - rel_pos: ESPnet `RelPositionMultiHeadedAttention` (latest), p `[2T-1]`, rel_shift;
    - legacy_rel_pos: ESPnet `LegacyRelPositionMultiHeadedAttention`, p `[T]`, rel_shift
      (zero_triu off);
    - wenet_rel_pos: WeNet's, p `[T]` absolute positions, no rel_shift.
    Extra parameters: `linear_pos` (no bias), `pos_bias_u`, `pos_bias_v` `[H, d_k]`.
    """

    def __init__(
        self, n_head: int, n_feat: int, dropout_rate: float, variant: str = "rel_pos"
    ) -> None:
        super().__init__(n_head, n_feat, dropout_rate)
        if variant not in REL_POS_SHIFT:
            raise ValueError(f"unknown relative attention variant {variant!r}")
        self.variant = variant
        self.shift = REL_POS_SHIFT[variant]
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        pos_emb: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        q, k, v = self.forward_qkv(query, key, value)
        p = self._heads(self.linear_pos(pos_emb))  # [1, H, 2T-1 (rel_pos) or T, d_k]
        q_u = q + self.pos_bias_u.unsqueeze(1)
        q_v = q + self.pos_bias_v.unsqueeze(1)
        # Position term (b, d in Transformer-XL); SDPA adds it to its own q_u k^T / sqrt(d_k).
        bd = torch.matmul(q_v, p.transpose(-2, -1))
        if self.shift:  # a fixed module setting, not a tensor value: fine for tracing
            bd = rel_shift(bd)
        bias = bd / math.sqrt(self.d_k)
        bias = bias.masked_fill(~mask, torch.finfo(bias.dtype).min)
        return self.attend(q_u, k, v, bias)
