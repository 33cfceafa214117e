"""Stage 6 decoding in nj jobs through the job runner: killed and re-run, finished jobs are kept;
a changed model redoes everything; a failing job is named with its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, recipe_env
from conftest_data import RUNNER_CMD, write_wav
from decode_fixtures import write_checkpoint

from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.decode.jobs import ModelSpec
from e2e_asr.decode.split_jobs import MIN_UTTS_PER_JOB, prepare_state

N = MIN_UTTS_PER_JOB + 4  # two jobs: 12 utterances each


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model") / "checkpoint.1")


def _data_dir(root: Path, pipe: str | None = None, segments: bool = False) -> Path:
    """N short utterances; with ``pipe``, the last one (job 2) is read through that command."""
    utts = []
    for i in range(N):
        wav = write_wav(root / "wav" / f"u{i:02d}.wav", 0.3, seed=i)
        entry = pipe.format(wav=wav) if pipe and i == N - 1 else str(wav)
        utts.append(Utterance(f"u{i:02d}", entry, "一二", f"u{i:02d}"))
    write_data_dir(root / "data", utts)
    return root / "data"


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (the runner starts each job in its own session),
    as when the machine running the whole stage dies."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _decode(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "steps/decode.py"),
        "--checkpoint",
        str(ckpt),
        "--data-dir",
        str(data),
        "--out-dir",
        str(out),
        "--mode",
        "ctc_greedy",
        "--nj",
        "2",
        "--cmd",
        RUNNER_CMD,
        *extra,
    ]


def test_killed_decode_reruns_only_unfinished_jobs(ckpt: Path, tmp_path: Path) -> None:
    ref_out = tmp_path / "ref"
    ref = subprocess.run(
        _decode(ckpt, _data_dir(tmp_path / "a"), ref_out),
        env=recipe_env(),
        capture_output=True,
        text=True,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "2 of 2 jobs to run" in ref.stderr

    flag = tmp_path / "go"
    # the last utterance (job 2) is read through a pipe that blocks until the flag exists
    data = _data_dir(
        tmp_path / "b", f"sh -c 'while [ ! -e {flag} ]; do sleep 0.05; done; cat {{wav}}' |"
    )
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _decode(ckpt, data, out),
        env=recipe_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not (out / "jobs/done.1.json").exists():
            assert time.time() < deadline and proc.poll() is None, "job 1 never finished"
            time.sleep(0.1)
    finally:
        _kill_tree(proc.pid)
        proc.wait()
    assert not (out / "jobs/done.2.json").exists() and not (out / "result.json").exists()
    stamp = (out / "jobs/done.1.json").stat().st_mtime_ns

    flag.touch()
    again = subprocess.run(
        _decode(ckpt, data, out), env=recipe_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 2 jobs to run" in again.stderr
    assert (out / "jobs/done.1.json").stat().st_mtime_ns == stamp  # finished job not redone
    assert (out / "hyp.txt").read_text() == (ref_out / "hyp.txt").read_text()
    assert len((out / "hyp.txt").read_text().splitlines()) == N
    assert not list((out / "jobs").glob(".*.tmp"))

    # nothing left to do: no job runs; a changed model (or options) redoes every job
    spec = ModelSpec(checkpoint=str(ckpt), overrides={"mode": "ctc_greedy"})
    assert prepare_state(spec, data, out, 2) == []
    os.utime(ckpt, ns=(time.time_ns(), time.time_ns()))
    assert prepare_state(spec, data, out, 2) == [1, 2]
    assert not (out / "jobs/done.1.json").exists()


def test_failing_decode_job_is_named_with_its_log(ckpt: Path, tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    # a segment of job 2 names a recording wav.scp does not have: that job fails
    (data / "segments").write_text(
        "".join(f"u{i:02d} u{i:02d} 0.0 -1\n" for i in range(N - 1)) + f"u{N - 1:02d} nope 0 -1\n"
    )
    out = tmp_path / "dec"
    proc = subprocess.run(
        _decode(ckpt, data, out), env=recipe_env(), capture_output=True, text=True
    )
    assert proc.returncode == 1
    log = out / "log/decode.2.log"
    assert f"job JOB=2 failed with exit code 1; see {log}" in proc.stderr
    assert "decode job 2: error:" in proc.stderr and "nope" in proc.stderr
    assert (out / "jobs/done.1.json").exists() and not (out / "result.json").exists()


def test_a_decode_config_the_options_break_is_refused_before_any_job(
    ckpt: Path, tmp_path: Path
) -> None:
    data = _data_dir(tmp_path)
    hot = tmp_path / "hot.txt"
    hot.write_text("一二\n", encoding="utf-8")
    out = tmp_path / "dec"
    proc = subprocess.run(
        _decode(ckpt, data, out, "--hotwords", str(hot)),  # with --mode ctc_greedy
        env=recipe_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "decode: error: decode config: hotwords work with mode ctc_prefix_beam, "
        "attention_rescoring, attention, not ctc_greedy"
    ]
    assert not (out / "log").exists()  # no job was started
