"""Stage 6: decode a Kaldi data dir in ``nj`` restartable jobs launched through ``$decode_cmd``.

Like stage 1 (``e2e_asr.data.feature_jobs``): job ``j`` decodes the ``j``-th contiguous slice of
the sorted utterances (streamed from wav.scp / segments, audio in chunks), and writes, each
through a temp name, ``OUT/jobs/hyp.<j>.txt``, ``failed.<j>.tsv`` and, last, ``done.<j>.json``
(its audio seconds, decode seconds and effective decode options): a job is finished exactly
when its ``done`` file exists. ``OUT/jobs/state.yaml`` records the model (paths, sizes and
modification times of its files), the decode options, ``nj`` and a digest of the data dir;
when any of them changes, earlier job outputs are dropped. A killed run re-runs only the
unfinished jobs; then the per-job outputs are merged and scored.

Run a job: ``python -m e2e_asr.decode.split_jobs --out-dir OUT --job J``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e_asr.cli import report_error
from e2e_asr.data.datadir import Segment, iter_kv
from e2e_asr.data.feature_jobs import _data_digest, count_utts, iter_job_utts
from e2e_asr.data.io import atomic_write_lines, atomic_write_text, job_error_lines
from e2e_asr.decode.jobs import Item, ModelSpec

STATE = "state.yaml"
# A job process pays seconds of imports and model loading; below this many utterances per
# job, fewer jobs finish sooner.
MIN_UTTS_PER_JOB = 20


class DecodeJobError(RuntimeError):
    pass


@dataclass
class Merged:
    """What the finished jobs decoded, merged."""

    hyps: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0  # wall clock of the slowest job, excluding model loading
    config: dict[str, Any] = field(default_factory=dict)


def _job_files(out_dir: Path, job: int) -> tuple[Path, Path, Path]:
    d = out_dir / "jobs"
    return d / f"hyp.{job}.txt", d / f"failed.{job}.tsv", d / f"done.{job}.json"


def _file_stamps(paths: list[str]) -> list[list]:
    """(path, size, mtime) of every file behind ``paths`` (directories: their files)."""
    out = []
    for p in paths:
        q = Path(p)
        files = sorted(f for f in q.rglob("*") if f.is_file()) if q.is_dir() else [q]
        for f in files:
            try:
                st = f.stat()
                out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([str(f), None, None])
    return out


def _model_fields(spec: ModelSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    for k in ("model_dir", "checkpoint", "decode_yaml"):
        if d.get(k):
            d[k] = str(Path(d[k]).resolve())
    return d


def prepare_state(spec: ModelSpec, data_dir: Path, out_dir: Path, nj: int) -> list[int]:
    """Write ``OUT/jobs/state.yaml`` (dropping old job outputs if anything changed); returns
    the jobs still to do."""
    model = _model_fields(spec)
    # the files whose change must invalidate earlier hypotheses: the model, the decode yaml,
    # and any file an option names (for example a hotword list)
    files = [model[k] for k in ("model_dir", "checkpoint", "decode_yaml") if model.get(k)]
    files += [v for v in model["overrides"].values() if isinstance(v, str) and Path(v).is_file()]
    state = {
        "data_dir": str(data_dir.resolve()),
        "nj": nj,
        "data_digest": _data_digest(data_dir),
        "model": model,
        "files": _file_stamps(files),
    }
    jobs = out_dir / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    path = jobs / STATE
    old = None
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            old = yaml.safe_load(fh)
    if old != state:
        for p in jobs.iterdir():
            if p.name != STATE:
                p.unlink()
        atomic_write_text(path, yaml.safe_dump(state, sort_keys=False, allow_unicode=True))
    for p in jobs.glob(".*.tmp"):  # left by a killed job; its job is not done
        p.unlink()
    return [j for j in range(1, nj + 1) if not _job_files(out_dir, j)[2].is_file()]


def _threads(nj: int) -> int:
    """Threads for one job: what Slurm gave it, else this machine's cores shared by nj jobs."""
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, (os.cpu_count() or 1) // nj)


def _items(data_dir: Path, job: int, nj: int) -> Iterator[Item]:
    for utt, wav, start, end in iter_job_utts(data_dir, job, nj):
        seg = Segment(wav, start, end) if (start > 0 or end >= 0) else None
        yield Item(utt, wav, seg)


def run_job(out_dir: str | os.PathLike, job: int, threads: int = 0) -> int:
    """Decode one job's slice (skipped if already done); returns utterances decoded."""
    from e2e_asr.decode.jobs import run_job as decode_items

    out_dir = Path(out_dir)
    path = out_dir / "jobs" / STATE
    if not path.is_file():
        raise DecodeJobError(f"{path} not found: run steps/decode.py, which writes it")
    with open(path, encoding="utf-8") as fh:
        state = yaml.safe_load(fh)
    nj = int(state["nj"])
    if not 1 <= job <= nj:
        raise DecodeJobError(f"job {job} outside 1..{nj}")
    hyp_path, failed_path, done_path = _job_files(out_dir, job)
    if done_path.is_file():
        print(f"job {job}: already done ({done_path})")
        return 0
    spec = ModelSpec(**state["model"])
    items = list(_items(Path(state["data_dir"]), job, nj))  # one slice: corpus / nj entries
    res = decode_items(spec, items, threads or _threads(nj), verbose=True)
    atomic_write_lines(hyp_path, (f"{k} {res.hyps[k]}".rstrip() for k in res.hyps))
    atomic_write_lines(failed_path, (f"{k}\t{v}" for k, v in res.failed.items()))
    done = {
        "utts": len(items),
        "audio_seconds": res.audio_seconds,
        "decode_seconds": res.decode_seconds,
        "config": res.config,
    }
    atomic_write_text(done_path, json.dumps(done, ensure_ascii=False) + "\n")
    print(f"job {job}: {len(res.hyps)} decoded, {len(res.failed)} failed -> {hyp_path}")
    return len(items)


def merge_jobs(out_dir: Path, nj: int) -> Merged:
    missing = [j for j in range(1, nj + 1) if not _job_files(out_dir, j)[2].is_file()]
    if missing:
        raise DecodeJobError(
            f"{out_dir}: decoding jobs {missing} did not finish; see {out_dir}/log"
        )
    m = Merged()
    for j in range(1, nj + 1):
        hyp_path, failed_path, done_path = _job_files(out_dir, j)
        m.hyps.update(iter_kv(hyp_path, allow_empty_value=True))
        with open(failed_path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    key, _, reason = line.rstrip("\n").partition("\t")
                    m.failed[key] = reason
        done = json.loads(done_path.read_text(encoding="utf-8"))
        m.audio_seconds += done["audio_seconds"]
        m.decode_seconds = max(m.decode_seconds, done["decode_seconds"])
        m.config = m.config or done["config"]
    return m


def _job_errors(log_dir: Path, nj: int) -> str:
    return job_error_lines(log_dir, "decode", nj, "decode")


def decode_data_dir(
    spec: ModelSpec,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    nj: int,
    cmd: str,
    threads: int = 0,
) -> Merged:
    """Decode ``data_dir`` in ``nj`` jobs through the ``cmd`` runner (``utils/run.py`` style,
    e.g. ``$decode_cmd``), resuming finished jobs, and merge their outputs. A decode config
    the overrides break raises ``DecodeConfigError`` before any job starts."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    spec.check_decode_config()
    if not (data_dir / "wav.scp").is_file():
        raise DecodeJobError(f"{data_dir}: no wav.scp")
    n = count_utts(data_dir)
    if n == 0:
        raise DecodeJobError(f"{data_dir}: no utterances")
    nj = max(1, min(nj, -(-n // MIN_UTTS_PER_JOB)))
    todo = prepare_state(spec, data_dir, out_dir, nj)
    log_dir = out_dir / "log"
    if todo:
        log_dir.mkdir(parents=True, exist_ok=True)
        argv = (
            shlex.split(cmd)
            + [
                f"JOB=1:{nj}",
                str(log_dir.resolve() / "decode.JOB.log"),
                sys.executable,
                "-m",
                "e2e_asr.decode.split_jobs",
                "--out-dir",
                str(out_dir.resolve()),
                "--job",
                "JOB",
            ]
            + (["--threads", str(threads)] if threads > 0 else [])
        )
        print(
            f"decode: {len(todo)} of {nj} jobs to run (logs: {log_dir}/decode.*.log)",
            file=sys.stderr,
            flush=True,
        )
        proc = subprocess.run(argv, check=False)
        if proc.returncode != 0:
            raise DecodeJobError(
                f"decoding jobs failed (runner exit {proc.returncode}); "
                f"{_job_errors(log_dir, nj)}see {log_dir}/decode.*.log"
            )
    else:
        print(f"decode: all {nj} jobs already done", file=sys.stderr, flush=True)
    return merge_jobs(out_dir, nj)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one stage-6 decoding job (launched by decode.py)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--threads", type=int, default=0, help="0: Slurm's cpus, else cores / nj")
    args = p.parse_args(argv)
    from e2e_asr.data.audio import AudioError
    from e2e_asr.data.datadir import DataDirError
    from e2e_asr.data.feature_jobs import FeatureJobError
    from e2e_asr.data.features import FeatureError
    from e2e_asr.decode.config import DecodeConfigError
    from e2e_asr.decode.recognizer import RecognizerError
    from e2e_asr.model.checkpoint import CheckpointError

    try:
        run_job(args.out_dir, args.job, args.threads)
    except (
        DecodeJobError,
        DataDirError,
        FeatureJobError,
        AudioError,
        FeatureError,
        DecodeConfigError,
        RecognizerError,
        CheckpointError,
        OSError,
    ) as exc:
        return report_error(f"decode job {args.job}", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
