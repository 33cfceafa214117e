"""Position-wise feed-forward block (ESPnet names `w_1`, `w_2`)."""

from __future__ import annotations

import torch
from torch import nn

from e2e_asr.model.dropout import Dropout


class PositionwiseFeedForward(nn.Module):
    """`w_2(dropout(act(w_1(x))))`; ReLU for the Transformer, Swish for the Conformer."""

    def __init__(
        self, idim: int, hidden_units: int, dropout_rate: float, activation: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden_units)
        self.w_2 = nn.Linear(hidden_units, idim)
        self.dropout = Dropout(dropout_rate)
        self.activation = activation if activation is not None else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))
