"""The hybrid CTC/attention model and its builder."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from e2e_asr.model.cmvn import GlobalCMVN
from e2e_asr.model.config import CriterionConfig, ModelConfig
from e2e_asr.model.ctc import CTC
from e2e_asr.model.decoder import Decoder
from e2e_asr.model.encoder import Encoder
from e2e_asr.model.label_smoothing import LabelSmoothingLoss
from e2e_asr.model.subsampling import RATES


def add_sos_eos(
    ys_pad: torch.Tensor, sos: int, eos: int, ignore_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ys_pad [B, L]` (-1 padded) -> `ys_in [B, L+1]` = sos + ys (eos padded),
    `ys_out [B, L+1]` = ys + eos (ignore_id padded), `ys_in_lens [B]`."""
    b = ys_pad.size(0)
    pad = ys_pad == ignore_id
    ys_lens = (~pad).sum(1)
    sos_col = ys_pad.new_full((b, 1), sos)
    ys_in = torch.cat([sos_col, ys_pad.masked_fill(pad, eos)], dim=1)
    ys_out = torch.cat([ys_pad, ys_pad.new_full((b, 1), ignore_id)], dim=1)
    ys_out = ys_out.scatter(1, ys_lens.unsqueeze(1), eos)
    return ys_in, ys_out, ys_lens + 1


class E2EModel(nn.Module):
    """Encoder (Transformer or Conformer) + attention decoder + CTC, ESPnet1 key names.

    Unit ids: blank 0, sos = eos = odim - 1, targets padded with ignore_id = -1.
    """

    def __init__(self, cfg: ModelConfig, crit: CriterionConfig) -> None:
        super().__init__()
        self.config = cfg
        self.criterion_config = crit
        self.idim = cfg.idim
        self.odim = cfg.odim
        self.sos = self.eos = cfg.odim - 1
        self.blank = 0
        self.ignore_id = -1
        self.subsampling_rate = RATES[cfg.encoder_input_layer]
        self.ctc_weight = crit.rate
        self.global_cmvn = GlobalCMVN(cfg.idim)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.ctc = CTC(cfg.odim, cfg.encoder_attention_dim, cfg.ctc_dropout, self.blank)
        self.criterion_att = LabelSmoothingLoss(
            cfg.odim, self.ignore_id, crit.smoothing, crit.length_normalized_loss
        )

    def set_cmvn(self, mean: torch.Tensor, istd: torch.Tensor) -> None:
        """Install global CMVN stats (`[idim]` each); saved with the state_dict."""
        self.global_cmvn.set(mean, istd)

    def encode(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw features `[B, T, idim]` -> (`[B, T', A]`, `[B]`); CMVN applied here."""
        return self.encoder(self.global_cmvn(feats), feat_lens)

    def ctc_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        return self.ctc.log_probs(enc)

    def decoder_logprobs(
        self,
        ys_in: torch.Tensor,
        ys_in_lens: torch.Tensor,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced `[B, L, V]` log-probabilities; row i predicts token i+1."""
        logits = self.decoder(ys_in, ys_in_lens, enc, enc_lens)
        return torch.log_softmax(logits.float(), dim=-1)

    def decoder_memory(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source-attention keys/values `[blocks, B, H, T', d_k]` for `decoder_step`."""
        return self.decoder.memory_kv(enc)

    def decoder_step(
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
        """Incremental `decoder_logprobs` (see `Decoder.forward_step`): log-probabilities
        `[N, S, V]` of `S` new positions plus the self-attention cache of all positions."""
        logits, k, v = self.decoder.forward_step(
            ys, positions, mask, cache_k, cache_v, mem_k, mem_v, enc_lens
        )
        return torch.log_softmax(logits.float(), dim=-1), k, v

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, ys_pad: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Hybrid loss `rate * ctc + (1 - rate) * att` plus both parts and attention accuracy.

        With rate == 1 the decoder is skipped: `loss_att` and `acc` are 0.
        """
        enc, enc_lens = self.encode(feats, feat_lens)
        ys_lens = (ys_pad != self.ignore_id).sum(1)
        zero = enc.new_zeros((), dtype=torch.float32)
        rate = self.ctc_weight
        loss_ctc = self.ctc.loss(enc, enc_lens, ys_pad, ys_lens) if rate > 0 else zero
        if rate < 1:
            ys_in, ys_out, ys_in_lens = add_sos_eos(ys_pad, self.sos, self.eos, self.ignore_id)
            logp = self.decoder_logprobs(ys_in, ys_in_lens, enc, enc_lens)
            loss_att = self.criterion_att(logp, ys_out)
            keep = ys_out != self.ignore_id
            correct = ((logp.argmax(-1) == ys_out) & keep).sum()
            acc = correct.float() / keep.sum().clamp(min=1).float()
        else:
            loss_att, acc = zero, zero
        loss = rate * loss_ctc + (1.0 - rate) * loss_att
        return {"loss": loss, "loss_ctc": loss_ctc, "loss_att": loss_att, "acc": acc.detach()}


def build_model(model_config: dict[str, Any], criterion_config: dict[str, Any]) -> E2EModel:
    """Build from the `model_config` / `criterion_config` sections (seed keys accepted)."""
    cfg = ModelConfig.from_dict(dict(model_config))
    crit = CriterionConfig.from_dict(dict(criterion_config))
    if crit.size is not None and crit.size != cfg.odim:
        raise ValueError(
            f"criterion_config.size = {crit.size} but model_config.odim = {cfg.odim}; "
            "both are the number of output units and must agree"
        )
    return E2EModel(cfg, crit)
