"""Deterministic train/dev selection and augmented-copy bookkeeping."""

from __future__ import annotations

import re

# Keys of augmented copies: "sp0.9-<utt>", "sp1.1-<utt>", "aug1-<utt>" (see augment.py),
# possibly stacked ("aug1-sp0.9-<utt>").
_COPY_PREFIX = re.compile(r"^(?:sp\d\.\d+|aug\d+)-")


def base_key(utt: str) -> str:
    """The original utterance an augmented copy was made from (the key itself if original)."""
    while True:
        stripped = _COPY_PREFIX.sub("", utt, count=1)
        if stripped == utt or not stripped:
            return utt
        utt = stripped


def is_copy(utt: str) -> bool:
    return base_key(utt) != utt


def dev_keys(sorted_keys, num_utt_percent: int) -> set[str]:
    """Every ``num_utt_percent``-th original utterance (0th, Pth, 2Pth … in sorted order).

    Only originals count, so adding augmented copies does not change the dev set; the set holds
    1/P of the keys.
    """
    if num_utt_percent < 2:
        raise ValueError(
            f"num_utt_percent must be >= 2 (1 in P goes to dev), got {num_utt_percent}"
        )
    dev: set[str] = set()
    i = 0
    for key in sorted_keys:
        if is_copy(key):
            continue
        if i % num_utt_percent == 0:
            dev.add(key)
        i += 1
    return dev
