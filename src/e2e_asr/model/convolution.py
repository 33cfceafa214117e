"""Conformer convolution module (ESPnet names `pointwise_conv1`, `depthwise_conv`, `norm`,
`pointwise_conv2`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pointwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A kernel-1 Conv1d applied as a matmul on `[B, T, C]`.

    PyTorch runs kernel-1 Conv1d through its slow im2col path on CPU; as a linear layer the
    same weights take one GEMM and no layout transposes.
    """
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class ConvolutionModule(nn.Module):
    """pointwise (2C) -> GLU -> depthwise (kernel k) -> BatchNorm -> Swish -> pointwise."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(
            channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels
        )
        self.norm = nn.BatchNorm1d(channels)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """`x [B, T, C]`, `pad_mask [B, T]` True on real frames."""
        x = F.glu(_pointwise(x, self.pointwise_conv1), dim=-1)  # [B, T, C]
        # Zero the padding before the time convolution so that a padded batch gives the same
        # outputs as each utterance alone (ESPnet1 let padding leak in at the edges).
        x = x.masked_fill(~pad_mask.unsqueeze(-1), 0.0).transpose(1, 2)  # [B, C, T]
        x = self.activation(self.norm(self.depthwise_conv(x)))
        return _pointwise(x.transpose(1, 2), self.pointwise_conv2)
