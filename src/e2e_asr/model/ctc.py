"""CTC output layer and loss (ESPnet name `ctc_lo`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from e2e_asr.model.dropout import Dropout


class CTC(nn.Module):
    def __init__(self, odim: int, eprojs: int, dropout_rate: float, blank: int = 0) -> None:
        super().__init__()
        self.ctc_lo = nn.Linear(eprojs, odim)
        self.dropout = Dropout(dropout_rate)
        self.blank = blank

    def log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        """`[B, T', V]` log-probabilities; dropout only in training (ESPnet1 always applied
        it, which made eval losses noisy)."""
        return F.log_softmax(self.ctc_lo(self.dropout(enc)), dim=-1)

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        ys_pad: torch.Tensor,
        ys_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Summed over the batch and divided by the batch size (ESPnet1)."""
        # ctc_loss is numerically fragile in half precision; always compute it in float32.
        logp = self.log_probs(enc).float().transpose(0, 1)  # [T', B, V]
        targets = ys_pad.clamp(min=0)  # padded form: ctc_loss reads only ys_lens[b] labels
        loss = F.ctc_loss(
            logp, targets, enc_lens, ys_lens, blank=self.blank, reduction="sum", zero_infinity=True
        )
        return loss / enc.size(0)
