"""Label-smoothed attention loss (ESPnet1 LabelSmoothingLoss semantics).

ESPnet1 computes KL(smoothed target || model), summed over non-padding tokens and divided by
the batch size (or by the token count with `normalize_length`). Instead of materialising the
`[N, V]` target distribution, the KL is expanded algebraically:
`KL = sum_v t_v log t_v - eps * sum_v logp_v - (conf - eps) * logp_target`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LabelSmoothingLoss(nn.Module):
    def __init__(
        self, size: int, padding_idx: int, smoothing: float, normalize_length: bool = False
    ) -> None:
        super().__init__()
        self.size = size
        self.padding_idx = padding_idx
        self.confidence = 1.0 - smoothing
        self.eps = smoothing / (size - 1)
        self.normalize_length = normalize_length
        # sum_v t_v log t_v of the smoothed target; 0 * log 0 taken as 0.
        entropy = 0.0
        if self.confidence > 0:
            entropy += self.confidence * math.log(self.confidence)
        if self.eps > 0:
            entropy += (size - 1) * self.eps * math.log(self.eps)
        self.neg_entropy = entropy

    def forward(self, logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`logp [B, L, V]` log-softmax outputs, `target [B, L]` padded with padding_idx."""
        batch_size = logp.size(0)
        logp = logp.reshape(-1, self.size).float()
        target = target.reshape(-1)
        keep = target != self.padding_idx
        logp_target = logp.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
        per_token = (
            self.neg_entropy - self.eps * logp.sum(1) - (self.confidence - self.eps) * logp_target
        )
        total = per_token.masked_fill(~keep, 0.0).sum()
        denom = keep.sum().clamp(min=1) if self.normalize_length else batch_size
        return total / denom
