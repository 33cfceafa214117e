"""Mini-batches from the seed's ``jconfig``, with ESPnet1 ``make_batchset`` semantics.

Utterances are ESPnet1 json entries (``{"input": [{"shape": [T, D]}], "output": [{"shape":
[L, V]}]}``). Rules, as in ESPnet1:

* sort by ``batch_sort_key`` (input or output length; ``shuffle`` = random order from the seed),
  longest first unless ``shortest_first``;
* ``count: seq``: ``batch_size`` utterances per batch, divided by ``1 + factor`` where
  ``factor = max(ilen // max_length_in, olen // max_length_out)`` of the batch's longest
  utterance - long utterances get smaller batches;
* ``count: bin``: as many utterances as keep ``B * (max_ilen*idim + max_olen*odim)`` within
  ``batch_bins`` (the padded size of the batch);
* ``count: frame``: as many as keep ``B * max_ilen`` within ``batch_frames_in``,
  ``B * max_olen`` within ``batch_frames_out`` and ``B * (max_ilen+max_olen)`` within
  ``batch_frames_inout`` (0 = no limit);
* ``count: auto``: seq if ``batch_size`` > 0, else bin if ``batch_bins`` > 0, else frame;
* batches smaller than ``min_batch_size`` are topped up with neighbouring utterances;
* ``num_batches`` > 0 keeps only the first that many batches (debugging).

ESPnet1 tops up short ``seq`` batches with randomly drawn utterances; here they come from the
utterances just before the batch, so the batch set is a pure function of the data and config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from e2e_asr.data.schema import Fail

log = logging.getLogger(__name__)

Utts = Mapping[str, dict[str, Any]]


def ilen(info: dict[str, Any]) -> int:
    return int(info["input"][0]["shape"][0])


def olen(info: dict[str, Any]) -> int:
    return int(info["output"][0]["shape"][0])


@dataclass
class JConfig:
    """``jconfig`` / ``valid_config.jconfig``: batching and the length filter (seed keys)."""

    batch_size: int = 16
    max_length_in: int = 512
    max_length_out: int = 150
    num_batches: int = 0
    min_batch_size: int = 1
    shortest_first: bool = True
    batch_sort_key: Literal["input", "output", "shuffle"] = "input"
    swap_io: bool = False
    count: Literal["auto", "seq", "bin", "frame"] = "seq"
    batch_bins: int = 100000
    batch_frames_in: int = 0
    batch_frames_out: int = 0
    batch_frames_inout: int = 0
    clean_data: bool = True
    down_sample: int = 2
    ilen_max: int = 2000
    ilen_min: int = 17
    olen_max: int = 100

    def check(self, fail: Fail) -> None:
        if self.min_batch_size < 1:
            fail("min_batch_size", "must be >= 1")


# The seed's valid_config spells one key without the "s"; it means the same thing.
JCONFIG_ALIASES = {"batch_frame_in": "batch_frames_in"}


@dataclass(frozen=True)
class LengthFilter:
    """THE length filter, the seed's ``clean_data`` (stage 2 and training share it): ilen =
    input frames, olen = output units. An utterance without output units is always dropped;
    with ``enabled`` (``clean_data: true``) also those outside ``ilen_min..ilen_max`` frames,
    longer than ``olen_max`` units or (``subsample`` > 1) with fewer subsampled frames than
    units, which CTC cannot align."""

    enabled: bool = True
    ilen_min: int = 17
    ilen_max: int = 2000
    olen_max: int = 100

    REASONS = {
        "empty_output": "no output units",
        "ilen_min": "ilen < ilen_min {ilen_min}",
        "ilen_max": "ilen > ilen_max {ilen_max}",
        "olen_max": "olen > olen_max {olen_max}",
        "ctc_too_short": "subsampled ilen < olen",
    }

    @classmethod
    def from_jconfig(cls, j: dict[str, Any] | None) -> LengthFilter:
        if not j:
            return cls()
        return cls(
            enabled=bool(j.get("clean_data", True)),
            ilen_min=int(j.get("ilen_min", cls.ilen_min)),
            ilen_max=int(j.get("ilen_max", cls.ilen_max)),
            olen_max=int(j.get("olen_max", cls.olen_max)),
        )

    def check(self, ilen: int, olen: int, subsample: int = 1) -> str | None:
        """None to keep, else the reason's code (a key of ``REASONS``)."""
        if olen == 0:
            return "empty_output"
        if not self.enabled:
            return None
        if ilen < self.ilen_min:
            return "ilen_min"
        if ilen > self.ilen_max:
            return "ilen_max"
        if olen > self.olen_max:
            return "olen_max"
        if subsample > 1 and ilen // subsample < olen:
            return "ctc_too_short"
        return None

    def reason(self, ilen: int, olen: int, subsample: int = 1) -> str | None:
        """None to keep, else the reason in words (``ilen < ilen_min 17``)."""
        code = self.check(ilen, olen, subsample)
        return None if code is None else self.REASONS[code].format(**vars(self))


def clean_data(
    utts: Utts, jconfig: dict[str, Any], subsample: int = 1, name: str = "data"
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """``LengthFilter.from_jconfig(jconfig)`` over json entries; returns the kept utterances
    and counts per reason code, and logs what was dropped and why."""
    filt = LengthFilter.from_jconfig(jconfig)
    counts = dict.fromkeys(LengthFilter.REASONS, 0)
    kept: dict[str, dict[str, Any]] = {}
    for key, info in utts.items():
        code = filt.check(ilen(info), olen(info), subsample)
        if code is None:
            kept[key] = info
        else:
            counts[code] += 1
    dropped = sum(counts.values())
    if dropped:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        log.info(
            "%s: clean_data dropped %d of %d utterances (%s)", name, dropped, len(utts), detail
        )
    return kept, counts


def _resolve_count(jconfig: dict[str, Any]) -> str:
    count = jconfig["count"]
    if count != "auto":
        return count
    if jconfig["batch_size"] > 0:
        return "seq"
    if jconfig["batch_bins"] > 0:
        return "bin"
    if any(jconfig[k] > 0 for k in ("batch_frames_in", "batch_frames_out", "batch_frames_inout")):
        return "frame"
    raise ValueError("jconfig: count auto needs batch_size, batch_bins or batch_frames_* > 0")


def _sorted_keys(utts: Utts, jconfig: dict[str, Any], seed: int) -> list[str]:
    keys = sorted(utts)  # a fixed base order, whatever order the json files came in
    sort_key = jconfig["batch_sort_key"]
    if sort_key == "shuffle":
        rng = np.random.default_rng(seed)
        return [keys[i] for i in rng.permutation(len(keys))]
    length = ilen if sort_key == "input" else olen
    # stable sort: equal lengths keep the key order
    return sorted(keys, key=lambda k: length(utts[k]), reverse=not jconfig["shortest_first"])


def _by_seq(keys: list[str], utts: Utts, jc: dict[str, Any]) -> list[list[str]]:
    if jc["batch_size"] <= 0:
        raise ValueError("jconfig: count seq needs batch_size > 0")
    batches: list[list[str]] = []
    start = 0
    while start < len(keys):
        # The halving factor comes from the longest utterance in the candidate batch. With
        # longest-first sorting that is the first one, exactly ESPnet1's rule; with
        # shortest_first ESPnet1 looks at the shortest one, which lets long batches through.
        size = max(jc["batch_size"], jc["min_batch_size"])
        while True:
            window = keys[start : start + size]
            longest_i = max(ilen(utts[k]) for k in window)
            longest_o = max(olen(utts[k]) for k in window)
            factor = max(
                longest_i // jc["max_length_in"] if jc["max_length_in"] > 0 else 0,
                longest_o // jc["max_length_out"] if jc["max_length_out"] > 0 else 0,
            )
            new_size = max(jc["min_batch_size"], jc["batch_size"] // (1 + factor))
            if new_size >= size:
                break
            size = new_size
        batches.append(keys[start : start + size])
        start += size
    return batches


def _greedy(
    keys: list[str], utts: Utts, min_size: int, over: Callable[[int, int, int], bool]
) -> list[list[str]]:
    """Batches grown one utterance at a time until ``over(B, max_ilen, max_olen)`` (a batch
    takes at least one utterance), then raised to ``min_size``: ``count`` bin and frame."""
    batches: list[list[str]] = []
    start = 0
    while start < len(keys):
        size = 0
        max_i = max_o = 0
        while start + size < len(keys):
            info = utts[keys[start + size]]
            mi, mo = max(max_i, ilen(info)), max(max_o, olen(info))
            if size > 0 and over(size + 1, mi, mo):
                break
            max_i, max_o = mi, mo
            size += 1
        size = max(size, min_size)
        batches.append(keys[start : start + size])
        start += size
    return batches


def _by_bin(keys: list[str], utts: Utts, jc: dict[str, Any]) -> list[list[str]]:
    if jc["batch_bins"] <= 0:
        raise ValueError("jconfig: count bin needs batch_bins > 0")
    first = utts[keys[0]]
    idim = int(first["input"][0]["shape"][1])
    odim = int(first["output"][0]["shape"][1])

    def over(b: int, mi: int, mo: int) -> bool:
        return b * (mi * idim + mo * odim) > jc["batch_bins"]

    return _greedy(keys, utts, jc["min_batch_size"], over)


def _by_frame(keys: list[str], utts: Utts, jc: dict[str, Any]) -> list[list[str]]:
    lim_i, lim_o, lim_io = jc["batch_frames_in"], jc["batch_frames_out"], jc["batch_frames_inout"]
    if lim_i <= 0 and lim_o <= 0 and lim_io <= 0:
        raise ValueError("jconfig: count frame needs batch_frames_in/out/inout > 0")

    def over(b: int, mi: int, mo: int) -> bool:
        return (
            (lim_i > 0 and b * mi > lim_i)
            or (lim_o > 0 and b * mo > lim_o)
            or (lim_io > 0 and b * (mi + mo) > lim_io)
        )

    return _greedy(keys, utts, jc["min_batch_size"], over)


def _top_up(batches: list[list[str]], keys: list[str], min_size: int) -> None:
    """Fill a short final batch with the utterances sorted just before it."""
    if not batches or len(batches[-1]) >= min_size or len(keys) < min_size:
        return
    last = batches[-1]
    pool = [k for k in reversed(keys) if k not in set(last)]
    last.extend(pool[: min_size - len(last)])


def make_batchset(utts: Utts, jconfig: dict[str, Any], seed: int = 0) -> list[list[str]]:
    """Batches of utterance keys (see module docstring). Deterministic given the inputs."""
    if jconfig.get("swap_io"):
        raise ValueError("jconfig.swap_io: true swaps input and output (TTS); not supported here")
    if not utts:
        return []
    keys = _sorted_keys(utts, jconfig, seed)
    count = _resolve_count(jconfig)
    make = {"seq": _by_seq, "bin": _by_bin, "frame": _by_frame}[count]
    batches = make(keys, utts, jconfig)
    _top_up(batches, keys, jconfig["min_batch_size"])
    if jconfig["shortest_first"]:
        # ESPnet1 orders each batch longest first inside even when batches go shortest first
        length = ilen if jconfig["batch_sort_key"] != "output" else olen
        batches = [sorted(b, key=lambda k: length(utts[k]), reverse=True) for b in batches]
    if jconfig["num_batches"] > 0:
        batches = batches[: jconfig["num_batches"]]
    return batches


def epoch_order(n_batches: int, seed: int, epoch: int, *stream: int) -> list[int]:
    """The shuffled order of ``n_batches`` items in ``epoch``: a pure function of (seed, epoch,
    ``stream``); ``stream`` numbers tell apart orders drawn in one epoch (e.g. one per shard)."""
    rng = np.random.default_rng([int(seed), int(epoch), *(int(s) for s in stream)])
    return [int(i) for i in rng.permutation(n_batches)]


def shard_for_rank(order: list[int], rank: int, world: int, pad: str = "repeat") -> list[int]:
    """The part of ``order`` that ``rank`` trains on; every rank gets the same count.

    ``repeat``: the list is extended with its own first batches up to a multiple of ``world``
    (a few batches are seen twice in that epoch, none is lost). ``drop``: the tail that does
    not divide evenly is left out for this epoch (a different tail each epoch, because the
    order is reshuffled). Equal counts are what keeps DDP from hanging in an all-reduce that
    one rank never joins.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad rank {rank} of world size {world}")
    if pad not in ("repeat", "drop"):
        raise ValueError(f"ddp_pad must be repeat|drop, got {pad!r}")
    order = list(order)
    if not order:
        return []
    rem = len(order) % world
    if rem:
        if pad == "repeat":
            need = world - rem
            order += (order * (need // len(order) + 1))[:need]
        else:
            order = order[: len(order) - rem]
    return order[rank::world]
