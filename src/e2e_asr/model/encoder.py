"""Encoder: conv subsampling + N pre-norm blocks + `after_norm` (ESPnet1 names)."""

from __future__ import annotations

import torch
from torch import nn

from e2e_asr.model.attention import MultiHeadedAttention, RelPositionMultiHeadedAttention
from e2e_asr.model.config import REL_POS_TYPES, ModelConfig
from e2e_asr.model.convolution import ConvolutionModule
from e2e_asr.model.embedding import (
    LegacyRelPositionalEncoding,
    PositionalEncoding,
    RelPositionalEncoding,
    WenetRelPositionalEncoding,
)
from e2e_asr.model.encoder_layer import ConformerEncoderLayer, TransformerEncoderLayer
from e2e_asr.model.feed_forward import PositionwiseFeedForward
from e2e_asr.model.mask import lengths_to_mask
from e2e_asr.model.subsampling import Conv2dSubsampling


def _transformer_layer(cfg: ModelConfig) -> nn.Module:
    d = cfg.encoder_attention_dim
    return TransformerEncoderLayer(
        d,
        MultiHeadedAttention(cfg.encoder_attention_heads, d, cfg.encoder_attention_dropout_rate),
        PositionwiseFeedForward(d, cfg.encoder_linear_units, cfg.encoder_dropout_rate),
        cfg.encoder_dropout_rate,
        cfg.layer_norm_eps,
    )


POS_ENCODINGS = {
    "abs_pos": PositionalEncoding,
    "rel_pos": RelPositionalEncoding,
    "legacy_rel_pos": LegacyRelPositionalEncoding,
    "wenet_rel_pos": WenetRelPositionalEncoding,
}


def _conformer_layer(cfg: ModelConfig) -> nn.Module:
    d, heads = cfg.encoder_attention_dim, cfg.encoder_attention_heads
    drop = cfg.encoder_dropout_rate
    if cfg.pos_enc_layer_type in REL_POS_TYPES:
        attn = RelPositionMultiHeadedAttention(
            heads, d, cfg.encoder_attention_dropout_rate, cfg.pos_enc_layer_type
        )
    else:
        attn = MultiHeadedAttention(heads, d, cfg.encoder_attention_dropout_rate)

    def ff() -> PositionwiseFeedForward:
        return PositionwiseFeedForward(d, cfg.encoder_linear_units, drop, nn.SiLU())

    return ConformerEncoderLayer(
        d,
        attn,
        ff(),
        ff() if cfg.macaron_style else None,
        ConvolutionModule(d, cfg.cnn_module_kernel) if cfg.use_cnn_module else None,
        drop,
        cfg.layer_norm_eps,
    )


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.encoder_attention_dim
        pos_drop = cfg.positional_dropout_rate
        pos_drop = cfg.encoder_dropout_rate if pos_drop is None else pos_drop
        self.rel_pos = cfg.pos_enc_layer_type in REL_POS_TYPES
        pos_enc = POS_ENCODINGS[cfg.pos_enc_layer_type](d, pos_drop)
        self.embed = Conv2dSubsampling(cfg.idim, d, cfg.encoder_input_layer, pos_enc)
        make_layer = _conformer_layer if cfg.encoder_type == "conformer" else _transformer_layer
        self.encoders = nn.ModuleList(make_layer(cfg) for _ in range(cfg.encoder_num_blocks))
        self.after_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`feats [B, T, idim]` (normalised) -> (`[B, T', d]`, lengths `[B]`)."""
        x, lengths = self.embed(feats, feat_lens)
        pos_emb = None
        if self.rel_pos:
            x, pos_emb = x
        pad_mask = lengths_to_mask(lengths, x.size(1))  # [B, T']
        att_mask = pad_mask[:, None, None, :]  # keys only: padded queries are never read
        for layer in self.encoders:
            x = layer(x, att_mask, pad_mask, pos_emb)
        return self.after_norm(x), lengths
