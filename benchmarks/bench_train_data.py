#!/usr/bin/env python3
"""Stage 3's data side: peak memory vs corpus size, and how fast features are delivered.

1. Memory: synthetic stage-2 directories of 10k and 200k utterances (``train.{1..8}.json`` +
   ``dev.json``; every entry points at one of a few real feature matrices in a kaldiio ark, so
   the disk stays small). A fresh process per size builds what the trainer builds before its
   first batch (``TrainData``: the shard index, clean_data, the epoch's batches) and reads the
   first batches through the feature loader; its peak RSS (``VmHWM``) minus the RSS after the
   imports is the data side's peak. The same is measured for the old way (every shard read
   whole into one dict, as stage 3 did before the index) for comparison. Target: 200k within
   20% of 10k.
2. Loader: frames/s the feature loader (``BatchDataset`` + ``DataLoader``) delivers with 1, 2
   and N worker processes (N = CPU count), next to the input frames/s the seed-size model
   trains at here (fp32, one process: measured in this run), so one can see whether loading
   would starve the model (on a GPU the model is 10-100x faster than this CPU).

  python benchmarks/bench_train_data.py                     # 10k vs 200k, loader, model
  python benchmarks/bench_train_data.py --sizes 2000,20000  # smaller, quicker
"""

from __future__ import annotations

import argparse
import json
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
    """A stage-2-like directory with ``n`` train utterances (and 200 dev ones)."""
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
    if mode == "index":
        data = TrainData(json_dir)
        data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4)
        batches, _ = data.epoch_batches(1, 1)
        ds = BatchDataset(data.entries, batches[:20])
        n = len(data.target_keys)
    else:  # the old way: every train json read whole into one dict
        utts: dict[str, Any] = {}
        for p in sorted(json_dir.glob("train.*.json")):
            utts.update(read_utts(p))
        kept, _ = clean_data(utts, cfg["jconfig"], 4)
        batches = make_batchset(kept, cfg["jconfig"], 1)
        ds = BatchDataset(kept, batches[:20])
        n = len(kept)
    frames = sum(int(ds[i]["feat_lens"].sum()) for i in range(len(ds)))
    took = time.perf_counter() - t0
    peak = vm_kb("VmHWM")
    print(json.dumps({"mode": mode, "utts": n, "batches": len(batches), "frames_read": frames,
                      "baseline_mb": round(base / 1024, 1), "peak_mb": round(peak / 1024, 1),
                      "data_peak_mb": round((peak - base) / 1024, 1),
                      "seconds": round(took, 1)}))  # fmt: skip


def loader_fps(json_dir: Path, workers: int, n_batches: int) -> float:
    from e2e_asr.data.loader import BatchDataset, make_loader
    from e2e_asr.train.config import load_train_config
    from e2e_asr.train.data import TrainData

    cfg = load_train_config(REPO / "conf" / "finetune.yaml")
    data = TrainData(json_dir)
    data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4)
    batches, _ = data.epoch_batches(1, 1)
    ds = BatchDataset(data.entries, batches[: n_batches + 5])
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
    p.add_argument("--loader-batches", type=int, default=60)
    p.add_argument("--skip-old", action="store_true", help="do not measure the whole-dict way")
    p.add_argument("--child", nargs=2, metavar=("JSON_DIR", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(Path(a.child[0]), a.child[1])
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="bench_train_data."))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for n in sizes:
        d = work / f"n{n}"
        if not (d / "train_shards.txt").exists():
            t0 = time.perf_counter()
            make_corpus(d, n)
            print(f"made {n} utterances in {time.perf_counter() - t0:.1f} s: {d}", flush=True)
        for mode in ("index",) if a.skip_old else ("index", "dict"):
            out = subprocess.run([sys.executable, __file__, "--child", str(d), mode], env=env,
                                 capture_output=True, text=True, check=True)  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{mode:5s} {row['utts']:>7d} utts: data-side peak {row['data_peak_mb']:7.1f} MB "
                  f"(process peak {row['peak_mb']:.0f} MB, baseline {row['baseline_mb']:.0f} MB), "
                  f"{row['seconds']} s to first batches", flush=True)  # fmt: skip
    for mode in ("index", "dict"):
        r = [x for x in rows if x["mode"] == mode]
        if len(r) >= 2:
            ratio = r[-1]["data_peak_mb"] / max(r[0]["data_peak_mb"], 0.1)
            proc = r[-1]["peak_mb"] / r[0]["peak_mb"]
            print(f"{mode}: {r[-1]['utts']} vs {r[0]['utts']} utterances: data-side peak "
                  f"x{ratio:.2f}, process peak x{proc:.2f}")  # fmt: skip
    small = work / f"n{sizes[0]}"
    ncpu = os.cpu_count() or 1
    for w in sorted({1, 2, ncpu}):
        fps = loader_fps(small, w, a.loader_batches)
        print(f"feature loader, {w} worker(s): {fps:,.0f} frames/s delivered", flush=True)
    print(f"seed-size model, fp32 training on this CPU: {model_fps():,.0f} input frames/s")


if __name__ == "__main__":
    main()
