"""Boolean attention masks built from lengths with tensor ops only (export-safe)."""

from __future__ import annotations

import torch


def lengths_to_mask(lengths: torch.Tensor, max_len: int | torch.Tensor) -> torch.Tensor:
    """`[B, T]` bool, True on real frames.

    Lengths are clamped to at least 1 so no attention row is fully masked (that would give
    NaN from softmax and poison a whole batch's gradients); a zero-length item is garbage
    either way and is filtered out by the data layer.
    """
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.clamp(min=1).unsqueeze(1)


def causal_mask(length: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """`[L, L]` bool, True where query i may see key j (j <= i)."""
    positions = torch.arange(length, device=device)
    return positions.unsqueeze(0) <= positions.unsqueeze(1)
