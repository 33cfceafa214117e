"""Batching rules from jconfig (ESPnet1 make_batchset semantics), filters, DDP sharding."""

from __future__ import annotations

import copy

import pytest

from e2e_asr.data.batching import (
    clean_data,
    epoch_order,
    make_batchset,
    shard_for_rank,
)
from e2e_asr.train.config import JCONFIG_DEFAULTS


def utt(ilen: int, olen: int, idim: int = 40, odim: int = 100) -> dict:
    return {"input": [{"shape": [ilen, idim]}], "output": [{"shape": [olen, odim]}]}


def jc(**kw) -> dict:
    out = copy.deepcopy(JCONFIG_DEFAULTS)
    out.update(kw)
    return out


def test_seq_batches_halve_for_long_inputs() -> None:
    utts = {f"s{i:02d}": utt(100 + i, 10) for i in range(8)}
    utts.update({f"l{i:02d}": utt(600 + i, 10) for i in range(8)})  # >= max_length_in 512
    batches = make_batchset(utts, jc(batch_size=4, max_length_in=512, shortest_first=False))
    sizes = {tuple(sorted(b)): len(b) for b in batches}
    long_sizes = [n for keys, n in sizes.items() if keys[0].startswith("l")]
    short_sizes = [n for keys, n in sizes.items() if keys[0].startswith("s")]
    assert long_sizes == [2, 2, 2, 2]  # 4 // (1 + 600 // 512)
    assert short_sizes == [4, 4]
    assert sorted(k for b in batches for k in b) == sorted(utts)


def test_seq_halving_uses_output_length_too() -> None:
    utts = {f"u{i}": utt(100, 320) for i in range(6)}  # 320 // 150 = 2 -> size 6 // 3
    batches = make_batchset(utts, jc(batch_size=6, max_length_out=150))
    assert [len(b) for b in batches] == [2, 2, 2]


def test_sorting_and_order_inside_batches() -> None:
    utts = {f"u{i}": utt(50 + 10 * i, 5) for i in range(6)}
    longest_first = make_batchset(utts, jc(batch_size=3, shortest_first=False))
    assert longest_first[0] == ["u5", "u4", "u3"]
    shortest_first = make_batchset(utts, jc(batch_size=3, shortest_first=True))
    assert shortest_first[0] == ["u2", "u1", "u0"]  # batch of short ones, longest inside first
    by_output = make_batchset(
        {"a": utt(100, 9), "b": utt(200, 1), "c": utt(300, 5)},
        jc(batch_size=1, batch_sort_key="output", shortest_first=True),
    )
    assert by_output == [["b"], ["c"], ["a"]]


def test_min_batch_size_tops_up_last_batch() -> None:
    utts = {f"u{i}": utt(50 + i, 5) for i in range(5)}
    batches = make_batchset(utts, jc(batch_size=2, min_batch_size=2))
    assert all(len(b) >= 2 for b in batches)
    assert set(k for b in batches for k in b) == set(utts)


def test_bin_count_limits_padded_size() -> None:
    utts = {f"u{i}": utt(100, 10, idim=10, odim=10) for i in range(10)}  # 1100 bins each
    batches = make_batchset(utts, jc(count="bin", batch_bins=3500))
    assert [len(b) for b in batches] == [3, 3, 3, 1]


def test_frame_count_limits() -> None:
    utts = {f"u{i}": utt(100, 10) for i in range(7)}
    assert [len(b) for b in make_batchset(utts, jc(count="frame", batch_frames_in=250))] == [
        2,
        2,
        2,
        1,
    ]
    assert [len(b) for b in make_batchset(utts, jc(count="frame", batch_frames_inout=330))] == [
        3,
        3,
        1,
    ]
    with pytest.raises(ValueError, match="batch_frames"):
        make_batchset(utts, jc(count="frame"))


def test_auto_count_and_num_batches() -> None:
    utts = {f"u{i}": utt(100, 10, idim=10, odim=10) for i in range(10)}
    assert len(make_batchset(utts, jc(count="auto", batch_size=5))) == 2
    assert len(make_batchset(utts, jc(count="auto", batch_size=0, batch_bins=2200))) == 5
    assert len(make_batchset(utts, jc(batch_size=2, num_batches=3))) == 3


def test_clean_data_filters_and_counts() -> None:
    utts = {
        "ok": utt(100, 10),
        "short": utt(10, 2),
        "long": utt(3000, 10),
        "many_tokens": utt(1000, 120),
        "ctc_impossible": utt(40, 20),  # 40 // 4 = 10 frames for 20 tokens
    }
    kept, counts = clean_data(utts, jc(), subsample=4)
    assert list(kept) == ["ok"]
    assert counts["ilen_min"] == 1 and counts["ilen_max"] == 1
    assert counts["olen_max"] == 1 and counts["ctc_too_short"] == 1
    kept, _ = clean_data(utts, jc(clean_data=False))
    assert len(kept) == 5


def test_epoch_order_is_seeded_and_changes_per_epoch() -> None:
    assert epoch_order(20, seed=1, epoch=3) == epoch_order(20, seed=1, epoch=3)
    assert epoch_order(20, seed=1, epoch=3) != epoch_order(20, seed=1, epoch=4)
    assert sorted(epoch_order(20, seed=1, epoch=3)) == list(range(20))


@pytest.mark.parametrize("n", [1, 5, 6, 7])
def test_every_rank_gets_the_same_number_of_batches(n: int) -> None:
    order = list(range(n))
    for world in (2, 3):
        rep = [shard_for_rank(order, r, world, "repeat") for r in range(world)]
        assert len({len(s) for s in rep}) == 1
        assert set(i for s in rep for i in s) == set(order)  # nothing lost
        drop = [shard_for_rank(order, r, world, "drop") for r in range(world)]
        assert len({len(s) for s in drop}) == 1
        assert len(drop[0]) == n // world
        flat = [i for s in drop for i in s]
        assert len(flat) == len(set(flat))  # nothing seen twice


def test_swap_io_is_refused() -> None:
    with pytest.raises(ValueError, match="swap_io"):
        make_batchset({"a": utt(100, 5)}, jc(swap_io=True))
