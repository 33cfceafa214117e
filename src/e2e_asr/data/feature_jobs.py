"""Stage 1: features for a data dir in ``nj`` parallel jobs, restartable.

Job ``j`` takes the ``j``-th contiguous slice of the sorted utterances and writes
``data/raw_<type>.<j>.ark`` (through a temp name), then its ``utt2num_frames.<j>`` and, last,
``raw_<type>.<j>.scp``: a job is finished exactly when its scp exists. A killed run leaves only
temp files, which the re-run overwrites; finished jobs are skipped. ``feats.scp`` is written
(atomically) only after every job finished, so it never points into a partial ark.

Run a job: ``python -m e2e_asr.data.feature_jobs --data-dir D --job J``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import yaml

from e2e_asr.cli import report_error
from e2e_asr.data.audio import load_audio
from e2e_asr.data.datadir import iter_kv, read_kv, read_segments
from e2e_asr.data.features import FeatureConfig, compute_features
from e2e_asr.data.io import atomic_open, atomic_write_lines, atomic_write_text, job_error_lines

STATE = "state.yaml"


class FeatureJobError(RuntimeError):
    pass


@dataclass(frozen=True)
class JobPaths:
    ark: Path
    scp: Path
    num_frames: Path


def job_paths(data_dir: Path, cfg: FeatureConfig, job: int) -> JobPaths:
    d = (data_dir / "data").resolve()
    return JobPaths(
        d / f"raw_{cfg.type}.{job}.ark",
        d / f"raw_{cfg.type}.{job}.scp",
        d / f"utt2num_frames.{job}",
    )


def _data_digest(data_dir: Path) -> str:
    """Changes when the utterance list or their audio entries change."""
    h = hashlib.sha1()
    for name in ("wav.scp", "segments"):
        p = data_dir / name
        if p.is_file():
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        h.update(name.encode())
    return h.hexdigest()


def _utt_list_file(data_dir: Path) -> Path:
    return data_dir / ("segments" if (data_dir / "segments").is_file() else "wav.scp")


def count_utts(data_dir: Path) -> int:
    return sum(1 for _ in iter_kv(_utt_list_file(data_dir)))


def job_range(n: int, job: int, nj: int) -> tuple[int, int]:
    """[lo, hi) of the ``job``-th (1-based) of ``nj`` contiguous slices of ``n`` items."""
    return (job - 1) * n // nj, job * n // nj


def iter_job_utts(data_dir: Path, job: int, nj: int) -> Iterator[tuple[str, str, float, float]]:
    """(utt, wav entry, start s, end s or -1) for this job's slice, streaming wav.scp."""
    n = count_utts(data_dir)
    lo, hi = job_range(n, job, nj)
    if (data_dir / "segments").is_file():
        wavs = read_kv(data_dir / "wav.scp")
        segs = read_segments(data_dir / "segments")
        for i, utt in enumerate(sorted(segs)):
            if lo <= i < hi:
                s = segs[utt]
                if s.recording not in wavs:
                    raise FeatureJobError(
                        f"{data_dir}/segments: {utt}: no recording {s.recording} in wav.scp"
                    )
                yield utt, wavs[s.recording], s.start, s.end
        return
    for i, (utt, wav) in enumerate(iter_kv(data_dir / "wav.scp")):
        if i >= hi:
            break
        if i >= lo:
            yield utt, wav, 0.0, -1.0


def is_job_done(paths: JobPaths) -> bool:
    """The scp is written last; also check its ark really holds the last offset it names."""
    if not (paths.scp.is_file() and paths.num_frames.is_file() and paths.ark.is_file()):
        return False
    tail = collections.deque(iter_kv(paths.scp), maxlen=1)
    if not tail:
        return True
    offset = int(tail[0][1].rsplit(":", 1)[1])
    return paths.ark.stat().st_size > offset


def read_state(data_dir: Path) -> dict:
    p = data_dir / "data" / STATE
    if not p.is_file():
        raise FeatureJobError(f"{p} not found: run steps/make_feats.py, which writes it")
    with open(p, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def run_job(data_dir: str | os.PathLike, job: int) -> int:
    """Compute one job's features (skipped if already done); returns utterances written."""
    data_dir = Path(data_dir)
    state = read_state(data_dir)
    cfg = FeatureConfig.from_dict(state["feature"])
    nj = int(state["nj"])
    if not 1 <= job <= nj:
        raise FeatureJobError(f"job {job} outside 1..{nj}")
    paths = job_paths(data_dir, cfg, job)
    if is_job_done(paths):
        print(f"job {job}: already done ({paths.scp})")
        return 0
    try:  # one thread per job: parallelism comes from running nj jobs
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    scp_lines: list[str] = []  # one job's slice: bounded by corpus/nj lines of text
    frames_lines: list[str] = []
    cached: tuple[str, object] | None = None  # segments of one recording share its samples
    try:
        with atomic_open(paths.ark, "wb") as ark:
            for utt, wav, start, end in iter_job_utts(data_dir, job, nj):
                try:
                    if cached is not None and cached[0] == wav:
                        samples = cached[1]
                    else:
                        samples = load_audio(wav, cfg.sample_rate)
                        cached = (wav, samples)
                    if start > 0 or end >= 0:
                        lo = int(round(start * cfg.sample_rate))
                        hi = samples.shape[0] if end < 0 else int(round(end * cfg.sample_rate))
                        samples = samples[lo:hi]
                    feats = compute_features(samples, cfg, utt)
                except Exception as exc:
                    raise FeatureJobError(f"{data_dir}: utterance {utt} ({wav}): {exc}") from exc
                # kaldiio writes "<utt> " then the matrix; the scp offset points past the key.
                offset = ark.tell() + len((utt + " ").encode("utf-8"))
                kaldiio.save_ark(ark, {utt: feats})
                scp_lines.append(f"{utt} {paths.ark}:{offset}")
                frames_lines.append(f"{utt} {feats.shape[0]}")
        atomic_write_lines(paths.num_frames, frames_lines)
        atomic_write_lines(paths.scp, scp_lines)
    except OSError as exc:
        if exc.filename is not None:  # a file that could not be read names itself
            raise
        # a full disk or quota: say so and name the output (atomic_open removed the temp)
        raise FeatureJobError(
            f"cannot write {paths.ark.parent}/: {exc.strerror or exc}; the job's "
            "partial output was removed (free space and re-run: finished jobs are kept)"
        ) from exc
    print(f"job {job}: {len(scp_lines)} utterances -> {paths.ark}")
    return len(scp_lines)


def prepare_state(data_dir: Path, cfg: FeatureConfig, nj: int) -> list[int]:
    """Write ``data/state.yaml``; if config, nj or data changed, drop old outputs first.

    Returns the jobs still to do.
    """
    feat_dir = data_dir / "data"
    feat_dir.mkdir(parents=True, exist_ok=True)
    state = {"feature": cfg.to_dict(), "nj": nj, "data_digest": _data_digest(data_dir)}
    state_path = feat_dir / STATE
    old = None
    if state_path.is_file():
        with open(state_path, encoding="utf-8") as fh:
            old = yaml.safe_load(fh)
    if old != state:
        # feats.scp first, so nothing ever points at an ark that is about to disappear.
        for name in ("feats.scp", "utt2num_frames"):
            (data_dir / name).unlink(missing_ok=True)
        for p in feat_dir.iterdir():
            if p.name.startswith(("raw_", "utt2num_frames.")):
                p.unlink()
        atomic_write_text(state_path, yaml.safe_dump(state, sort_keys=False))
    for p in feat_dir.glob(".*.tmp"):  # left by a killed job; its job is not done
        p.unlink()
    return [j for j in range(1, nj + 1) if not is_job_done(job_paths(data_dir, cfg, j))]


def merge_jobs(data_dir: Path, cfg: FeatureConfig, nj: int) -> tuple[int, int]:
    """Concatenate finished jobs into feats.scp / utt2num_frames; returns (utts, frames)."""
    missing = [j for j in range(1, nj + 1) if not is_job_done(job_paths(data_dir, cfg, j))]
    if missing:
        raise FeatureJobError(
            f"{data_dir}: feature jobs {missing} did not finish; see {data_dir}/log"
        )

    def lines(kind: str) -> Iterator[str]:
        for j in range(1, nj + 1):
            p = job_paths(data_dir, cfg, j)
            for key, value in iter_kv(p.scp if kind == "scp" else p.num_frames):
                yield f"{key} {value}"

    frames = 0
    n = 0
    with atomic_open(data_dir / "utt2num_frames") as fh:
        for line in lines("frames"):
            fh.write(line + "\n")
            frames += int(line.rsplit(" ", 1)[1])
            n += 1
    expected = count_utts(data_dir)
    if n != expected:
        raise FeatureJobError(f"{data_dir}: jobs produced {n} utterances, data dir has {expected}")
    atomic_write_text(data_dir / "feature.yaml", cfg.to_yaml())
    atomic_write_lines(data_dir / "feats.scp", lines("scp"))
    return n, frames


def _job_errors(log_dir: Path, nj: int) -> str:
    return job_error_lines(log_dir, "make_feats", nj, "feature")


def make_feats(
    data_dir: str | os.PathLike, cfg: FeatureConfig, nj: int, cmd: str
) -> tuple[int, int]:
    """Run the jobs through the ``cmd`` runner (``utils/run.py`` style) and merge."""
    data_dir = Path(data_dir)
    if not (data_dir / "wav.scp").is_file():
        raise FeatureJobError(f"{data_dir}: no wav.scp (run stage 0 first)")
    n = count_utts(data_dir)
    if n == 0:
        raise FeatureJobError(f"{data_dir}: no utterances")
    nj = max(1, min(nj, n))
    todo = prepare_state(data_dir, cfg, nj)
    if todo:
        log_dir = data_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        argv = shlex.split(cmd) + [
            f"JOB=1:{nj}",
            str(log_dir / "make_feats.JOB.log"),
            sys.executable,
            "-m",
            "e2e_asr.data.feature_jobs",
            "--data-dir",
            str(data_dir),
            "--job",
            "JOB",
        ]
        print(
            f"make_feats: {len(todo)} of {nj} jobs to run (logs: {log_dir}/make_feats.*.log)",
            flush=True,
        )
        proc = subprocess.run(argv, check=False)
        if proc.returncode != 0:
            raise FeatureJobError(
                f"feature jobs failed (runner exit {proc.returncode}); "
                f"{_job_errors(log_dir, nj)}see {log_dir}/make_feats.*.log"
            )
    else:
        print(f"make_feats: all {nj} jobs already done", flush=True)
    return merge_jobs(data_dir, cfg, nj)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one stage-1 feature job (launched by make_feats)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--job", type=int, required=True)
    args = p.parse_args(argv)
    try:
        run_job(args.data_dir, args.job)
    except FeatureJobError as exc:
        return report_error(f"feature job {args.job}", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
