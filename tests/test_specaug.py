"""SpecAugment / SpecSub: what each transform does, and that ``prob`` is honoured."""

from __future__ import annotations

import numpy as np
import torch

from e2e_asr.data.specaug import SpecAugment


def feats(t: int = 120, d: int = 40) -> torch.Tensor:
    return torch.arange(t * d, dtype=torch.float32).reshape(t, d) / 100.0 + 1.0


def changed_fraction(tr: dict, n: int = 400) -> float:
    aug = SpecAugment([tr])
    rng = np.random.default_rng(0)
    x = feats()
    return sum(bool((aug(x, rng) != x).any()) for _ in range(n)) / n


def test_prob_zero_never_and_prob_one_nearly_always() -> None:
    for tr in (
        {"type": "freq_mask", "F": 30, "n_mask": 2, "replace_with_zero": True},
        {"type": "time_mask", "T": 40, "n_mask": 2, "replace_with_zero": True},
        {"type": "spec_sub", "max_t": 30, "num_t_sub": 3},
        {"type": "time_warp", "max_time_warp": 5, "mode": "PIL"},
    ):
        assert changed_fraction({**tr, "prob": 0.0}) == 0.0
        assert changed_fraction({**tr, "prob": 1.0}) > 0.75


def test_prob_is_honoured_in_between() -> None:
    # SpecSub always changes a ramp, so the changed fraction estimates prob directly;
    # 400 draws at p=0.3: std 0.023, the bounds are > 4 std away
    frac = changed_fraction({"type": "spec_sub", "max_t": 30, "num_t_sub": 3, "prob": 0.3})
    assert 0.2 < frac < 0.4


def test_masks_fill_zero_or_mean_and_keep_input() -> None:
    x = feats()
    rng = np.random.default_rng(1)
    y = SpecAugment([{"type": "freq_mask", "F": 30, "n_mask": 1, "replace_with_zero": True}])(
        x, rng
    )
    masked_cols = [c for c in range(x.shape[1]) if bool((y[:, c] != x[:, c]).all())]
    assert masked_cols and all(bool((y[:, c] == 0).all()) for c in masked_cols)
    assert not bool((x == 0).any())  # the input was not modified
    z = SpecAugment([{"type": "time_mask", "T": 40, "n_mask": 1, "replace_with_zero": False}])(
        x, np.random.default_rng(2)
    )
    rows = [r for r in range(x.shape[0]) if bool((z[r] != x[r]).any())]
    assert rows and torch.allclose(z[rows[0]], torch.full_like(z[rows[0]], float(x.mean())))


def test_time_warp_keeps_shape_and_ends() -> None:
    x = feats()
    y = SpecAugment([{"type": "time_warp", "max_time_warp": 5, "mode": "PIL"}])(
        x, np.random.default_rng(3)
    )
    assert y.shape == x.shape
    # the warp moves the middle; the first frame stays within half a frame (0.4 per frame here)
    assert torch.allclose(y[0], x[0], atol=0.2)
    assert not torch.equal(y, x)
    short = feats(t=8)
    assert torch.equal(
        SpecAugment([{"type": "time_warp", "max_time_warp": 5}])(short, np.random.default_rng(0)),
        short,
    )


def test_same_rng_seed_same_augmentation() -> None:
    aug = SpecAugment(
        [
            {"type": "time_warp", "max_time_warp": 5},
            {"type": "freq_mask", "F": 10, "n_mask": 2, "replace_with_zero": False},
        ]
    )
    x = feats()
    a = aug(x, np.random.default_rng([1, 2, 3]))
    b = aug(x, np.random.default_rng([1, 2, 3]))
    assert torch.equal(a, b)
