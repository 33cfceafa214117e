"""Global CMVN statistics in Kaldi's format: a 2×(D+1) float64 matrix.

Row 0 holds the per-dimension sums and the frame count in the last column, row 1 the sums of
squares (last column 0), as written by Kaldi's ``compute-cmvn-stats``.
"""

from __future__ import annotations

import os

import kaldiio
import numpy as np

from e2e_asr.data.io import atomic_open


class CmvnStats:
    """Accumulates Kaldi global stats over feature matrices ``[T, D]``."""

    def __init__(self, dim: int) -> None:
        self.stats = np.zeros((2, dim + 1), dtype=np.float64)

    @property
    def dim(self) -> int:
        return self.stats.shape[1] - 1

    @property
    def frames(self) -> int:
        return int(self.stats[0, -1])

    def add(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected [T, {self.dim}] features, got {list(x.shape)}")
        self.stats[0, :-1] += x.sum(axis=0)
        self.stats[1, :-1] += np.square(x).sum(axis=0)
        self.stats[0, -1] += x.shape[0]


def write_cmvn(path: str | os.PathLike, stats: np.ndarray) -> None:
    """Write stats (binary Kaldi matrix, double) atomically."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2 or stats[0, -1] <= 0:
        raise ValueError(f"{path}: CMVN stats must be 2×(D+1) with a positive frame count")
    with atomic_open(path, "wb") as fh:
        kaldiio.save_mat(fh, stats)


def stats_to_mean_istd(
    stats: np.ndarray, var_floor: float = 1e-20
) -> tuple[np.ndarray, np.ndarray]:
    """THE CMVN formula (Kaldi/ESPnet/WeNet): stats ``[2, D+1]`` (sums, sums of squares,
    frame count last) -> float32 (mean, 1 / sqrt(max(var, var_floor)))."""
    stats = np.asarray(stats, dtype=np.float64)
    count = stats[0, -1]
    mean = stats[0, :-1] / count
    var = np.maximum(stats[1, :-1] / count - np.square(mean), var_floor)
    return mean.astype(np.float32), (1.0 / np.sqrt(var)).astype(np.float32)


def read_cmvn(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], inverse std [D]) as float32 from a Kaldi global stats file."""
    try:
        stats = np.asarray(kaldiio.load_mat(str(path)), dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"{path}: not a Kaldi CMVN stats matrix ({exc})") from exc
    if stats.ndim != 2 or stats.shape[0] != 2 or stats[0, -1] <= 0:
        raise ValueError(f"{path}: expected 2×(D+1) global CMVN stats, got shape {stats.shape}")
    return stats_to_mean_istd(stats)
