#!/usr/bin/env python3
"""Benchmark of the data stages (not a test).

1. Feature stage real-time factor per core, end to end (read wav + extract + write ark/scp),
   ours (stage-1 job: lhotse, Kaldi-exact) next to kaldi-native-fbank on the same files; both
   single-threaded, timed in CPU seconds of this process.
2. Peak memory (max RSS) of each of stages 0, 1, 2 as run by the recipe, for a small and a
   10x larger corpus of short synthetic utterances; the larger should be within 20%.

    python benchmarks/bench_features.py                       # 1k vs 10k utterances
    python benchmarks/bench_features.py --sizes 200 2000      # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest_data import tone  # noqa: E402  (shared synthetic signal)

from e2e_asr.data.datadir import Utterance, write_data_dir  # noqa: E402
from e2e_asr.data.feature_jobs import job_paths, prepare_state, run_job  # noqa: E402
from e2e_asr.data.features import FeatureConfig, compute_features  # noqa: E402


def make_wavs(root: Path, n: int, min_s: float, max_s: float, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    base = tone(max_s, seed=seed)
    paths = []
    for i in range(n):
        # speaker folders of 100 files, as corpora usually come
        p = root / f"spk{i // 100:04d}" / f"utt{i:06d}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        n_samp = int(rng.uniform(min_s, max_s) * 16000)
        off = int(rng.integers(0, len(base) - n_samp + 1))
        sf.write(p, base[off : off + n_samp], 16000, subtype="PCM_16")
        paths.append(p)
    return paths


def knf_job(paths: list[Path], cfg: FeatureConfig, ark: Path) -> None:
    """The same work with kaldi-native-fbank: read, compute, write ark + scp."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = cfg.dither
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    opts.energy_floor = cfg.energy_floor
    with open(ark, "wb") as fa, open(ark.with_suffix(".scp"), "w") as fs:
        for p in paths:
            x, _ = sf.read(p, dtype="int16")
            comp = knf.OnlineFbank(opts)
            comp.accept_waveform(16000, x.astype(np.float32).tolist())
            comp.input_finished()
            feats = np.stack([comp.get_frame(i) for i in range(comp.num_frames_ready)])
            key = p.stem
            offset = fa.tell() + len(key) + 1
            kaldiio.save_ark(fa, {key: feats})
            fs.write(f"{key} {ark}:{offset}\n")


def rtf(work: Path, n: int) -> None:
    import torch

    torch.set_num_threads(1)
    paths = make_wavs(work / "rtf_wav", n, 2.0, 6.0, seed=1)
    audio_s = sum(sf.info(p).duration for p in paths)
    cfg = dataclasses.replace(FeatureConfig.from_yaml(REPO / "conf" / "fbank.yaml"), dither=0.0)
    data = work / "rtf_data"
    write_data_dir(data, [Utterance(p.stem, str(p), "x", p.stem) for p in paths])
    compute_features(np.zeros(16000, np.float32), cfg)  # warm-up: imports, filterbank
    prepare_state(data, cfg, 1)
    t = time.process_time()
    run_job(data, 1)
    ours = time.process_time() - t
    t = time.process_time()
    knf_job(paths, cfg, work / "knf.ark")
    ref = time.process_time() - t
    a = kaldiio.load_mat(open(job_paths(data, cfg, 1).scp).readline().split()[1])
    b = kaldiio.load_mat(open(work / "knf.scp").readline().split()[1])
    print(f"feature stage, {n} files, {audio_s:.0f} s of audio, fbank 80, 1 thread:")
    print(
        f"  ours (lhotse, read+extract+write): {audio_s / ours:8.0f}x real time per core "
        f"({ours:.2f} CPU s)"
    )
    print(
        f"  kaldi-native-fbank (same work):    {audio_s / ref:8.0f}x real time per core "
        f"({ref:.2f} CPU s)"
    )
    print(f"  max abs difference on the first file: {np.abs(a - b).max():.2e}")


# Measured from a small launcher process: on Linux a child's max RSS starts from its parent's
# at fork time, and this benchmark process holds torch by then.
_LAUNCH = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_measured(argv: list[str], log: Path) -> tuple[float, float]:
    """Run a stage; (peak RSS in MB over it and its children, wall seconds)."""
    t = time.time()
    res = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(log), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    code, maxrss_kb = map(int, res.stdout.split())
    if code != 0:
        raise SystemExit(f"{argv[1]} failed, see {log}")
    return maxrss_kb / 1024, time.time() - t


def memory(work: Path, n: int) -> dict[str, float]:
    root = work / f"mem{n}"
    wavs = make_wavs(root / "wav", n, 0.3, 0.8, seed=2)
    (root / "transcript.txt").write_text(
        "".join(f"{p.stem} 今天 天气 很好 第{i % 10}\n" for i, p in enumerate(wavs)),
        encoding="utf-8",
    )
    py, steps = sys.executable, REPO / "steps"
    runner = f"{py} {REPO / 'utils' / 'run.py'} --max-jobs-run 1"
    stages = {
        "0 make_data": [
            py,
            str(steps / "make_data.py"),
            "--out-dir",
            str(root / "data"),
            "--wav-dir",
            str(root / "wav"),
            "--transcript",
            str(root / "transcript.txt"),
        ],
        "1 make_feats": [
            py,
            str(steps / "make_feats.py"),
            "--data-dir",
            str(root / "data"),
            "--feat-config",
            str(REPO / "conf" / "fbank.yaml"),
            "--nj",
            "1",
            "--cmd",
            runner,
        ],
        "2 make_units": [
            py,
            str(steps / "make_units.py"),
            "--data-dir",
            str(root / "data"),
            "--out",
            str(root / "units.txt"),
        ],
        "2 make_json": [
            py,
            str(steps / "make_json.py"),
            "--data-dir",
            str(root / "data"),
            "--out-dir",
            str(root / "json"),
            "--units",
            str(root / "units.txt"),
            "--json-nj",
            "4",
            "--num-utt-percent",
            "50",
        ],
    }
    out = {}
    for name, argv in stages.items():
        rss, wall = run_measured(argv, root / f"{name.replace(' ', '_')}.log")
        out[name] = rss
        print(f"  {n:6d} utts  stage {name:13s} peak RSS {rss:7.1f} MB  ({wall:.1f} s wall)")
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        default=[1000, 10000],
        help="small and large corpus sizes for the memory comparison",
    )
    p.add_argument("--rtf-files", type=int, default=200, help="files (2-6 s) for the RTF run")
    p.add_argument("--work-dir", default=None, help="scratch dir (default: a temp dir, removed)")
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_features."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rtf(work, args.rtf_files)
        print("peak memory of stages 0-2 (max RSS per stage process incl. its jobs):")
        small, large = (memory(work, n) for n in args.sizes)
        for name in small:
            ratio = large[name] / small[name]
            flag = "ok" if ratio <= 1.2 else "OVER 20%"
            print(f"  stage {name:13s} {args.sizes[1]} vs {args.sizes[0]}: {ratio:5.2f}x  {flag}")
        overall = max(large.values()) / max(small.values())
        print(
            f"  overall peak {max(large.values()):.1f} MB vs {max(small.values()):.1f} MB: "
            f"{overall:.2f}x"
        )
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
