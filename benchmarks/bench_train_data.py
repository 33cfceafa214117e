#!/usr/bin/env python3
"""Stage 3's data side: peak memory vs corpus size, and how fast features are delivered.

1. Memory: synthetic stage-2 directories of 10k and 200k utterances (``train.{1..N}.json`` +
   ``dev.json``; every entry points at one of a few real feature matrices in a kaldiio ark, so
   the disk stays small). The shard size is fixed (``--shard-utts``, default 5000), so stage 2's
   ``json_nj`` grows with the corpus: 2 shards for 10k, 40 for 200k. A fresh process per size
   does what the trainer does for an epoch on the data side (``TrainData``: every shard checked
   and counted, clean_data and batching per shard, the epoch's plan, then every shard's part of
   the epoch built in turn, the first 20 batches read through the feature loader); its peak RSS
   (``VmHWM``) minus the RSS after the imports is the data side's peak. ``mix``: the same with
   source mixing (``--mix-ratio 0.5``, the corpus itself as the source). ``dict``: the old way
   (every shard read whole into one dict, batches over all of it) for comparison. Target: 200k
   within 20% of 10k.
2. Loader: frames/s the feature loader (``BatchDataset`` + ``DataLoader``) delivers with 1, 2
   and N worker processes (N = CPU count), next to the input frames/s the seed-size model
   trains at here (fp32, one process: measured in this run), so one can see whether loading
   would starve the model (on a GPU the model is 10-100x faster than this CPU).

  python benchmarks/bench_train_data.py                     # 10k vs 200k, loader, model
  python benchmarks/bench_train_data.py --sizes 2000,20000 --shard-utts 1000  # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 80
TEXT = "今天天气很好我们一起去公园散步吧"


def vm_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def make_corpus(root: Path, n: int, json_nj: int = 8, n_mats: int = 64) -> Path:
    """A stage-2-like directory with ``n`` train utterances dealt in turn to ``json_nj`` shards,
    as stage 2 does (and 200 dev ones)."""
    import kaldiio

    from e2e_asr.data.espnet_json import JsonWriter, make_entry

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    mats = {
        f"m{i}": rng.standard_normal((200 + 7 * i, DIM)).astype(np.float32) for i in range(n_mats)
    }
    kaldiio.save_ark(str(root / "feats.ark"), mats, scp=str(root / "feats.scp"))
    spec = dict(line.split(None, 1) for line in (root / "feats.scp").read_text().splitlines())
    tokens = list(TEXT)
    writers = [JsonWriter(root / f"train.{j + 1}.json") for j in range(json_nj)]
    dev = JsonWriter(root / "dev.json")
    for i in range(n + 200):
        m = f"m{i % n_mats}"
        k = 5 + i % 10
        entry = make_entry(spec[m].strip(), mats[m].shape[0], DIM, TEXT[:k], tokens[:k],
                           [2 + (i + t) % 400 for t in range(k)], 403, f"spk{i % 50}")  # fmt: skip
        (dev if i >= n else writers[i % json_nj]).add(f"utt{i:07d}", entry)
    for w in (*writers, dev):
        w.close()
    (root / "train_shards.txt").write_text("".join(f"train.{j + 1}.json\n" for j in range(json_nj)))
    return root


def child(json_dir: Path, mode: str) -> None:
    """One measurement process: prints a json line with the data side's peak memory."""
    import torch  # noqa: F401 - the trainer's imports, counted in the baseline

    from e2e_asr.data.batching import clean_data, make_batchset
    from e2e_asr.data.espnet_json import read_utts
    from e2e_asr.data.loader import BatchDataset
    from e2e_asr.train.config import load_train_config
    from e2e_asr.train.data import TrainData

    cfg = load_train_config(REPO / "conf" / "finetune.yaml")
    base = vm_kb("VmRSS")
    t0 = time.perf_counter()
    frames = 0
    if mode in ("index", "mix"):
        mix = (json_dir, 0.5) if mode == "mix" else (None, 0.0)
        data = TrainData(json_dir, None, *mix)
        data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4, 1)
        plan = data.epoch_plan(1)
        for j in range(len(plan.order)):
            seg = data.segment(plan, j)
            if j == 0:
                ds = BatchDataset(seg.entries, seg.for_rank(0, 1, "repeat")[:20])
                frames = sum(int(ds[i]["feat_lens"].sum()) for i in range(len(ds)))
                ds.close()
            seg.close()
        n, n_batches = data.n_train + plan.drawn, plan.batches
    else:  # the old way: every train json read whole into one dict
        utts: dict[str, Any] = {}
        for p in sorted(json_dir.glob("train.*.json")):
            utts.update(read_utts(p))
        kept, _ = clean_data(utts, cfg["jconfig"], 4)
        batches = make_batchset(kept, cfg["jconfig"], 1)
        ds = BatchDataset(kept, batches[:20])
        frames = sum(int(ds[i]["feat_lens"].sum()) for i in range(len(ds)))
        n, n_batches = len(kept), len(batches)
    took = time.perf_counter() - t0
    peak = vm_kb("VmHWM")
    print(json.dumps({"mode": mode, "utts": n, "batches": n_batches, "frames_read": frames,
                      "baseline_mb": round(base / 1024, 1), "peak_mb": round(peak / 1024, 1),
                      "data_peak_mb": round((peak - base) / 1024, 1),
                      "seconds": round(took, 1)}))  # fmt: skip


def loader_fps(json_dir: Path, workers: int, n_batches: int) -> float:
    from e2e_asr.data.loader import BatchDataset, make_loader
    from e2e_asr.train.config import load_train_config
    from e2e_asr.train.data import TrainData

    cfg = load_train_config(REPO / "conf" / "finetune.yaml")
    data = TrainData(json_dir)
    data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4, 1)
    seg = data.segment(data.epoch_plan(1), 0)
    ds = BatchDataset(seg.entries, seg.for_rank(0, 1, "repeat")[: n_batches + 5])
    frames = 0
    t0 = 0.0
    for i, batch in enumerate(make_loader(ds, workers)):
        if i == 5:  # workers started, first batches out
            t0 = time.perf_counter()
        elif i > 5:
            frames += int(batch["feat_lens"].sum())
    return frames / (time.perf_counter() - t0)


def model_fps(batch: int = 8, frames: int = 500, steps: int = 2) -> float:
    """Input frames/s of fp32 training steps of the seed-size model (conf/finetune.yaml)."""
    import torch

    from e2e_asr.model import build_model
    from e2e_asr.train.config import load_train_config

    cfg = load_train_config(REPO / "conf" / "finetune.yaml")
    mc = cfg["model_config"]
    torch.manual_seed(0)
    model = build_model(mc, cfg["criterion_config"]).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    feats = torch.randn(batch, frames, mc["idim"])
    lens = torch.full((batch,), frames, dtype=torch.int64)
    ys = torch.randint(2, mc["odim"] - 1, (batch, 20))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        model(feats, lens, ys)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return batch * frames / (sum(times[1:]) / steps)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="10000,200000", help="corpus sizes (train utterances)")
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--shard-utts", type=int, default=5000,
                   help="utterances per train json (json_nj: size / this, rounded up)")  # fmt: skip
    p.add_argument("--loader-batches", type=int, default=60)
    p.add_argument("--skip-old", action="store_true", help="do not measure the whole-dict way")
    p.add_argument("--skip-mix", action="store_true", help="do not measure source mixing")
    p.add_argument("--child", nargs=2, metavar=("JSON_DIR", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(Path(a.child[0]), a.child[1])
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="bench_train_data."))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    modes = ["index", *([] if a.skip_mix else ["mix"]), *([] if a.skip_old else ["dict"])]
    for n in sizes:
        json_nj = math.ceil(n / a.shard_utts)
        d = work / f"n{n}_nj{json_nj}"
        if not (d / "train_shards.txt").exists():
            t0 = time.perf_counter()
            make_corpus(d, n, json_nj)
            print(f"made {n} utterances in {json_nj} json files ({a.shard_utts} or fewer each) "
                  f"in {time.perf_counter() - t0:.1f} s: {d}", flush=True)  # fmt: skip
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--child", str(d), mode], env=env,
                                 capture_output=True, text=True, check=True)  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{mode:5s} {row['utts']:>7d} utts: data-side peak {row['data_peak_mb']:7.1f} MB "
                  f"(process peak {row['peak_mb']:.0f} MB, baseline {row['baseline_mb']:.0f} MB), "
                  f"{row['batches']} batches, {row['seconds']} s", flush=True)  # fmt: skip
    for mode in modes:
        r = [x for x in rows if x["mode"] == mode]
        if len(r) >= 2:
            ratio = r[-1]["data_peak_mb"] / max(r[0]["data_peak_mb"], 0.1)
            proc = r[-1]["peak_mb"] / r[0]["peak_mb"]
            print(f"{mode}: {r[-1]['utts']} vs {r[0]['utts']} utterances: data-side peak "
                  f"x{ratio:.2f}, process peak x{proc:.2f}")  # fmt: skip
    small = work / f"n{sizes[0]}_nj{math.ceil(sizes[0] / a.shard_utts)}"
    ncpu = os.cpu_count() or 1
    for w in sorted({1, 2, ncpu}):
        fps = loader_fps(small, w, a.loader_batches)
        print(f"feature loader, {w} worker(s): {fps:,.0f} frames/s delivered", flush=True)
    print(f"seed-size model, fp32 training on this CPU: {model_fps():,.0f} input frames/s")


if __name__ == "__main__":
    main()
