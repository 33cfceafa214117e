"""Attention decoder: `embed` (Embedding + PE), `decoders.N`, `after_norm`, `output_layer`.

`forward` scores whole (padded) sequences at once (training, rescoring). `memory_kv` and
`forward_step` are the incremental form used by the searches: the source-attention keys and
values of the encoder output are computed once per utterance, and each call adds new
positions on top of a per-layer self-attention key/value cache, so a beam step costs one
position per hypothesis instead of the whole prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from e2e_asr.model.attention import MultiHeadedAttention
from e2e_asr.model.config import ModelConfig
from e2e_asr.model.decoder_layer import DecoderLayer
from e2e_asr.model.embedding import PositionalEncoding
from e2e_asr.model.feed_forward import PositionwiseFeedForward
from e2e_asr.model.mask import causal_mask, lengths_to_mask


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, heads = cfg.decoder_attention_dim, cfg.decoder_attention_heads
        drop = cfg.decoder_dropout_rate
        pos_drop = drop if cfg.positional_dropout_rate is None else cfg.positional_dropout_rate
        self.embed = nn.Sequential(nn.Embedding(cfg.odim, d), PositionalEncoding(d, pos_drop))
        self.decoders = nn.ModuleList(
            DecoderLayer(
                d,
                MultiHeadedAttention(heads, d, cfg.decoder_self_attention_dropout_rate),
                MultiHeadedAttention(
                    heads, d, cfg.decoder_src_attention_dropout_rate, cfg.encoder_attention_dim
                ),
                PositionwiseFeedForward(d, cfg.decoder_linear_units, drop),
                drop,
                cfg.layer_norm_eps,
            )
            for _ in range(cfg.decoder_num_block)
        )
        self.after_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.output_layer = nn.Linear(d, cfg.odim)

    def forward(
        self,
        ys_in: torch.Tensor,
        ys_in_lens: torch.Tensor,
        memory: torch.Tensor,
        memory_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced logits `[B, L, V]` (before log-softmax)."""
        length = ys_in.size(1)
        # Causal and key padding; padded query rows still see position 0, so no NaN rows.
        tgt_mask = lengths_to_mask(ys_in_lens, length)[:, None, None, :] & causal_mask(
            length, ys_in.device
        )
        memory_mask = lengths_to_mask(memory_lens, memory.size(1))[:, None, None, :]
        # Padding ids may be -1 (ignore_id) or eos; either way they are masked, so clamp
        # them to a valid row instead of failing in the embedding lookup.
        x = self.embed(ys_in.clamp(min=0))
        for layer in self.decoders:
            x = layer(x, tgt_mask, memory, memory_mask)
        return self.output_layer(self.after_norm(x))

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source-attention keys and values of every block for `memory [B, T', A]`:
        `(mem_k, mem_v)`, each `[blocks, B, H, T', d_k]`."""
        ks, vs = [], []
        for layer in self.decoders:
            att = layer.src_attn
            ks.append(att._heads(att.linear_k(memory)))
            vs.append(att._heads(att.linear_v(memory)))
        return torch.stack(ks), torch.stack(vs)

    def forward_step(
        self,
        ys: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        mem_k: torch.Tensor,
        mem_v: torch.Tensor,
        memory_lens: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits `[N, S, V]` of `S` new tokens `ys [N, S]` at `positions [N, S]`, on top of
        the cached keys/values `cache_k/v [blocks, N, H, P, d_k]` of `P` earlier positions.

        `mask [N, S, P+S]` (bool) says which of the `P+S` positions each new one attends to:
        all of them for a beam step (`S = 1`), its ancestors and itself for a prefix tree of
        hypotheses scored at once (`P = 0`, `S` = tree nodes). `mem_k/v` come from
        `memory_kv` (one encoder row may serve all `N`), `memory_lens [N or 1]` their lengths.
        Returns `(logits, keys, values)`, the latter `[blocks, N, H, P+S, d_k]`: the cache for
        the next call. With the same tokens, positions and causal masks this equals `forward`.
        """
        memory_mask = lengths_to_mask(memory_lens, mem_k.size(3))[:, None, None, :]
        x = self.embed[1].at(self.embed[0](ys.clamp(min=0)), positions)
        mask = mask[:, None]
        ks, vs = [], []
        for i, layer in enumerate(self.decoders):
            x, k, v = layer.forward_step(
                x, mask, cache_k[i], cache_v[i], mem_k[i], mem_v[i], memory_mask
            )
            ks.append(k)
            vs.append(v)
        return self.output_layer(self.after_norm(x)), torch.stack(ks), torch.stack(vs)
