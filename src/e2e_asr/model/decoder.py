"""Attention decoder: `embed` (Embedding + PE), `decoders.N`, `after_norm`, `output_layer`."""

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
