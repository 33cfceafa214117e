"""Convolutional front ends that shorten the feature sequence (ESPnet1 Conv2dSubsampling*).

State_dict names follow ESPnet1: `conv.0`, `conv.2`(, `conv.4`) for the convolutions (ReLUs
in between), `out.0` for the projection; `out.1` is the positional encoding.
"""

from __future__ import annotations

import torch
from torch import nn

# (kernel, stride) of each Conv2d, per `encoder_input_layer`.
LAYOUTS: dict[str, list[tuple[int, int]]] = {
    "conv2d": [(3, 2), (3, 2)],
    "conv2d6": [(3, 2), (5, 3)],
    "conv2d8": [(3, 2), (3, 2), (3, 2)],
}
RATES = {"conv2d": 4, "conv2d6": 6, "conv2d8": 8}


def conv_out_lengths(lengths: torch.Tensor, layout: list[tuple[int, int]]) -> torch.Tensor:
    """Output lengths of unpadded convolutions: `(L - k) // s + 1` per layer.

    Written as `(L - k + s) // s` clamped at 0 so that floor division (torch) and truncating
    division (ONNX) agree: the two differ only on negative values, which both clamp to 0.
    For conv2d this is ESPnet's `((L - 1) // 2 - 1) // 2`.
    """
    for kernel, stride in layout:
        lengths = torch.div(lengths - kernel + stride, stride, rounding_mode="trunc").clamp(min=0)
    return lengths


class Conv2dSubsampling(nn.Module):
    """Conv2d stack over (time, freq) + linear projection + positional encoding."""

    def __init__(self, idim: int, odim: int, input_layer: str, pos_enc: nn.Module) -> None:
        super().__init__()
        self.layout = LAYOUTS[input_layer]
        self.rate = RATES[input_layer]
        layers: list[nn.Module] = []
        channels, freq = 1, idim
        for kernel, stride in self.layout:
            # In-place ReLU: saves writing one more activation of the largest tensor here.
            layers += [nn.Conv2d(channels, odim, kernel, stride), nn.ReLU(inplace=True)]
            channels, freq = odim, (freq - kernel) // stride + 1
        if freq < 1:
            raise ValueError(f"idim {idim} is too small for {input_layer} subsampling")
        self.conv = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Linear(odim * freq, odim), pos_enc)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`x [B, T, idim]` -> (`out.1`'s output for `[B, T', odim]`, lengths `[B]`).

        The first item is `x` (absolute encoding) or `(x, pos_emb)` (relative encoding).
        """
        x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.size()
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, conv_out_lengths(lengths, self.layout)
