"""On-the-fly SpecAugment and SpecSub from the seed's ``trans_config`` (training only).

Each transform is applied to one utterance's raw feature matrix ``[T, D]`` with its own
probability ``prob`` (default 1.0): the coin is thrown per utterance and per transform, and a
transform that loses the throw leaves the features untouched. Randomness comes from the
``numpy.random.Generator`` passed in, which the loader derives from (seed, epoch, batch), so an
augmented batch is reproducible after a resume and independent of the number of workers.

* ``time_warp``: a point ``c`` in ``[W, T-W)`` moves to ``c + w``, ``|w| < W``; the two sides are
  stretched by interpolation along time (``mode: PIL``, the seed's setting, means bicubic
  resizing as PIL did; ``bicubic``/``bilinear`` may be named directly).
* ``freq_mask`` / ``time_mask``: ``n_mask`` bands of width ``[0, F)`` / ``[0, T)`` set to zero
  (``replace_with_zero``) or to the utterance mean.
* ``spec_sub``: ``num_t_sub`` times, a segment of ``[1, max_t]`` frames is replaced by the same
  number of frames taken from earlier in the utterance.

``inplace`` is accepted for seed compatibility; the input is never modified.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# time_warp ``mode`` -> torch interpolation mode. "PIL" is the seed's value: ESPnet1 resized
# with PIL's bicubic filter; torch's bicubic interpolation does the same job without PIL.
TIME_WARP_MODES = {"PIL": "bicubic", "bicubic": "bicubic", "bilinear": "bilinear"}


def time_warp(x: torch.Tensor, max_warp: int, mode: str, rng: np.random.Generator) -> torch.Tensor:
    t = x.shape[0]
    if max_warp <= 0 or t - max_warp <= max_warp + 1:
        return x  # too short to warp around a centre at least max_warp from both ends
    center = int(rng.integers(max_warp, t - max_warp))
    warped = int(rng.integers(center - max_warp + 1, center + max_warp))
    if warped == center:
        return x
    img = x.t().unsqueeze(0).unsqueeze(0)  # [1, 1, D, T]: interpolate along time only
    d = x.shape[1]
    how = TIME_WARP_MODES[mode]
    left = F.interpolate(img[..., :center], size=(d, warped), mode=how, align_corners=False)
    right = F.interpolate(img[..., center:], size=(d, t - warped), mode=how, align_corners=False)
    return torch.cat([left, right], dim=-1)[0, 0].t().contiguous()


def _mask(
    x: torch.Tensor, axis: int, width: int, n_mask: int, zero: bool, rng: np.random.Generator
) -> torch.Tensor:
    size = x.shape[axis]
    fill = 0.0 if zero else float(x.mean())
    for _ in range(n_mask):
        w = int(rng.integers(0, max(1, min(width, size))))
        if w == 0:
            continue
        start = int(rng.integers(0, size - w + 1))
        if axis == 0:
            x[start : start + w, :] = fill
        else:
            x[:, start : start + w] = fill
    return x


def spec_sub(x: torch.Tensor, max_t: int, num_t_sub: int, rng: np.random.Generator) -> torch.Tensor:
    t = x.shape[0]
    src = x.clone()
    for _ in range(num_t_sub):
        length = int(rng.integers(1, max_t + 1))
        if t - length <= 1:
            continue
        start = int(rng.integers(1, t - length))  # >= 1 so there is an earlier frame to copy
        back = int(rng.integers(1, start + 1))
        x[start : start + length] = src[start - back : start - back + length]
    return x


class SpecAugment:
    """The list of transforms from the normalised ``trans_config``."""

    def __init__(self, transforms: list[dict[str, Any]]) -> None:
        for i, tr in enumerate(transforms):
            kind = tr.get("type")
            if kind not in ("time_warp", "freq_mask", "time_mask", "spec_sub"):
                raise ValueError(f"trans_config[{i}]: unknown transform type {kind!r}")
            if kind == "time_warp" and tr.get("mode", "PIL") not in TIME_WARP_MODES:
                raise ValueError(f"trans_config[{i}]: unknown time_warp mode {tr['mode']!r}")
        self.transforms = transforms

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __call__(self, feats: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        x = feats.clone()
        for tr in self.transforms:
            # one coin per transform and utterance; drawn even when prob is 1 so that changing
            # one transform's prob does not shift the random stream of the others
            if rng.random() >= float(tr.get("prob", 1.0)):
                continue
            kind = tr["type"]
            if kind == "time_warp":
                x = time_warp(x, int(tr["max_time_warp"]), tr.get("mode", "PIL"), rng)
            elif kind == "freq_mask":
                x = _mask(x, 1, int(tr["F"]), int(tr["n_mask"]), bool(tr["replace_with_zero"]), rng)
            elif kind == "time_mask":
                x = _mask(x, 0, int(tr["T"]), int(tr["n_mask"]), bool(tr["replace_with_zero"]), rng)
            else:
                x = spec_sub(x, int(tr["max_t"]), int(tr["num_t_sub"]), rng)
        return x
