"""Helpers for the data-stage tests: synthetic audio and small corpora with known defects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
RUNNER_CMD = f"{sys.executable} {REPO / 'utils' / 'run.py'} --max-jobs-run 2"


def tone(seconds: float, sr: int = 16000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A speech-like test signal: harmonics with a varying pitch, noise, and a silent gap."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(n)
    x[n // 3 : n // 3 + sr // 20] = 0.0  # digital silence: where log-floor handling differs
    x = x.astype(np.float32)
    return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)], axis=1) if channels > 1 else x


def write_wav(
    path: Path,
    seconds: float,
    sr: int = 16000,
    seed: int = 0,
    channels: int = 1,
    fmt: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, seed, channels), sr, subtype="PCM_16", format=fmt)
    return path


def run_step(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(REPO / "steps" / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        check=False,
    )


def read_table(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            k, _, v = line.partition(" ") if "\t" not in line else line.partition("\t")
            out[k] = v
    return out


def rejects(data_dir: Path) -> dict[str, str]:
    """key -> reason category from rejects.tsv."""
    out = {}
    for line in (data_dir / "rejects.tsv").read_text(encoding="utf-8").splitlines():
        key, reason = line.split("\t", 1)
        assert key not in out, f"{key} twice in rejects.tsv"
        out[key] = reason.split(":", 1)[0]
    return out


def make_features_inprocess(data_dir: Path, cfg, nj: int = 1) -> None:
    """Stage 1 without subprocesses (fast): state, every job, merge."""
    from e2e_asr.data.feature_jobs import merge_jobs, prepare_state, run_job

    for job in prepare_state(data_dir, cfg, nj):
        run_job(data_dir, job)
    merge_jobs(data_dir, cfg, nj)
