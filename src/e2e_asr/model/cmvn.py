"""Global CMVN kept inside the model, so a checkpoint always carries its normalisation."""

from __future__ import annotations

import torch
from torch import nn


class GlobalCMVN(nn.Module):
    """`(x - mean) * istd`; identity until `set` is called. Buffers `mean`, `istd` `[D]`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))

    def set(self, mean: torch.Tensor, istd: torch.Tensor) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        istd = torch.as_tensor(istd, dtype=torch.float32).flatten()
        if mean.shape != self.mean.shape or istd.shape != self.istd.shape:
            raise ValueError(
                f"CMVN dim {mean.numel()}/{istd.numel()} does not match feature dim "
                f"{self.mean.numel()}"
            )
        self.mean.copy_(mean)
        self.istd.copy_(istd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.istd
