"""The Slurm backend (utils/slurm.py, cmd_backend=slurm) against a real single-node cluster.

The cluster (tests/slurm_cluster.py: munged + slurmctld + slurmd on localhost, state in a temp
dir) is started once for this module. As root it installs Debian's slurm-wlm with apt when
missing; the tests skip only when that is impossible (not root and Slurm not installed), and
fail instead of skipping when CI=true.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from conftest import REPO, recipe_env
from conftest_data import write_wav
from decode_fixtures import exported, write_checkpoint
from slurm_cluster import SlurmCluster, SlurmUnavailable

from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.decode.split_jobs import MIN_UTTS_PER_JOB

sys.path.insert(0, str(REPO / "utils"))
from slurm import SlurmConfig, SlurmConfigError  # noqa: E402

SLURM_PY = str(REPO / "utils" / "slurm.py")
RUN_PY = str(REPO / "utils" / "run.py")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        started = time.monotonic()
        c.start()
        print(f"slurm test cluster up in {time.monotonic() - started:.1f} s")
    except SlurmUnavailable as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: the Slurm test cluster must start: {e}")
        pytest.skip(f"no Slurm test cluster: {e}")
    yield c
    c.stop()


def slurm_env(cluster: SlurmCluster) -> dict[str, str]:
    return cluster.env(recipe_env())


def run(
    args: list[str], env: dict[str, str], timeout: float = 300, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---- the config file (no cluster needed) --------------------------------------------------


def test_slurm_conf_maps_options_kaldi_style(tmp_path: Path) -> None:
    cfg = SlurmConfig.read(REPO / "conf" / "slurm.conf")
    assert cfg.command[0] == "sbatch"
    default = cfg.sbatch_options({})
    assert "--mem=4G" in default and "--cpus-per-task=1" in default
    assert not any(o.startswith(("--gres", "--partition", "--time")) for o in default)
    opts = cfg.sbatch_options(
        {"gpu": "2", "partition": "gpu", "mem": "8G", "time": "1:00:00", "num_threads": "4"}
    )
    assert {
        "--gres=gpu:2",
        "--partition=gpu",
        "--mem=8G",
        "--time=1:00:00",
        "--cpus-per-task=4",
    } <= set(opts)
    assert "--mem=4G" not in opts
    with pytest.raises(SlurmConfigError, match="--gpus-per-task"):
        cfg.sbatch_options({"gpus_per_task": "1"})
    bad = tmp_path / "bad.conf"
    bad.write_text("command sbatch\noptoin mem=* --mem $0\n")
    with pytest.raises(SlurmConfigError, match=r"bad.conf:2"):
        SlurmConfig.read(bad)


def test_cmd_sh_selects_the_backend() -> None:
    def cmds(backend: str) -> subprocess.CompletedProcess:
        return run(
            ["bash", "-c", '. ./cmd.sh && echo "$train_cmd|$decode_cmd"'],
            env=dict(recipe_env(), cmd_backend=backend),
        )

    local = cmds("local")
    assert local.returncode == 0 and local.stdout.startswith("run.py --max-jobs-run")
    slurm = cmds("slurm")
    assert slurm.returncode == 0, slurm.stderr
    train, decode = slurm.stdout.strip().split("|")
    assert train.startswith("slurm.py --config conf/slurm.conf") and decode.startswith("slurm.py")
    wrong = cmds("pbs")
    assert wrong.returncode != 0 and "unknown cmd_backend 'pbs'" in wrong.stderr


# ---- the runner on the cluster ----------------------------------------------------------


def test_slurm_runner_runs_array_and_names_failed_jobs(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    env = slurm_env(cluster)
    started = time.monotonic()
    out = run(
        [
            SLURM_PY,
            "--mem",
            "100M",
            "JOB=1:3",
            str(tmp_path / "log/x.JOB.log"),
            "bash",
            "-c",
            'echo "output of JOB on $SLURM_JOB_ID"; [ JOB != 2 ]',
        ],
        env,
    )
    took = time.monotonic() - started
    print(f"3-job array with one failure: {took:.1f} s")
    assert out.returncode == 1, out.stderr
    assert f"job JOB=2 failed with exit code 1; see {tmp_path / 'log/x.2.log'}" in out.stderr
    assert "JOB=1 " not in out.stderr and "JOB=3 " not in out.stderr
    assert "1 of 3 jobs failed" in out.stderr
    for j in (1, 2, 3):
        log = (tmp_path / f"log/x.{j}.log").read_text()
        assert log.startswith("# bash -c") and f"output of {j} on " in log
        assert f"# Ended (code {int(j == 2)})" in log
    ok = run([SLURM_PY, "JOB=1:2", str(tmp_path / "ok/y.JOB.log"), "echo JOB done"], env)
    assert ok.returncode == 0, ok.stderr
    assert "2 done" in (tmp_path / "ok/y.2.log").read_text()
    assert not list((tmp_path / "ok/q").iterdir())  # scripts and status files cleaned up


def test_slurm_runner_ctrl_c_cancels_the_jobs(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = slurm_env(cluster)
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [SLURM_PY, "JOB=1:2", str(tmp_path / "log/s.JOB.log"), f"touch {marker}.JOB; sleep 120"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (marker.with_suffix(".1").exists() and marker.with_suffix(".2").exists()):
        assert time.time() < deadline and proc.poll() is None, "jobs never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert "cancelled slurm job" in err
    job_id = err.split("cancelled slurm job")[1].split()[0]
    deadline = time.time() + 30
    while True:
        q = run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], env).stdout.strip()
        if not q or all(w in ("CANCELLED", "COMPLETING") for w in q.split()[1::2]):
            break
        assert time.time() < deadline, f"jobs still queued after Ctrl-C: {q}"
        time.sleep(0.5)


# ---- stage 1 through the backend --------------------------------------------------------


def _data_dir(root: Path, n: int, broken: int | None = None) -> Path:
    utts = []
    for i in range(n):
        wav = write_wav(root / "wav" / f"u{i}.wav", 0.5 + 0.05 * i, seed=i)
        entry = str(root / "wav" / "missing.wav") if i == broken else str(wav)
        utts.append(Utterance(f"u{i:02d}", entry, "字", f"u{i:02d}"))
    write_data_dir(root / "data", utts)
    return root / "data"


def _feat_conf(tmp_path: Path, num_mel_bins: int = 80) -> Path:
    conf = tmp_path / "fbank.yaml"  # dither 0: features are deterministic, comparable
    text = (REPO / "conf/fbank.yaml").read_text().replace("dither: 1.0", "dither: 0.0")
    conf.write_text(text.replace("num_mel_bins: 80", f"num_mel_bins: {num_mel_bins}"))
    return conf


def test_stage1_failing_job_on_slurm_is_named(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = slurm_env(cluster)
    d = _data_dir(tmp_path, 6, broken=3)  # u03 is in job 2 of 3
    out = run(
        [
            sys.executable,
            str(REPO / "steps/make_feats.py"),
            "--data-dir",
            str(d),
            "--feat-config",
            str(_feat_conf(tmp_path)),
            "--nj",
            "3",
            "--cmd",
            f"{SLURM_PY} --mem 500M",
        ],
        env,
    )
    assert out.returncode != 0
    assert f"job JOB=2 failed with exit code 1; see {d / 'log/make_feats.2.log'}" in out.stderr
    assert "1 of 3 jobs failed" in out.stderr
    assert "u03" in out.stderr  # make_feats quotes the job's own error line
    assert not (d / "feats.scp").exists()


# ---- stage 6 through the backend --------------------------------------------------------


def test_stage6_failing_decode_job_on_slurm_is_named(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = slurm_env(cluster)
    n = MIN_UTTS_PER_JOB + 2
    d = _data_dir(tmp_path, n)
    # the last utterance's segment names a recording wav.scp lacks: job 2 of 2 fails
    (d / "segments").write_text(
        "".join(f"u{i:02d} u{i:02d} 0.0 -1\n" for i in range(n - 1)) + f"u{n - 1:02d} nope 0 -1\n"
    )
    ckpt = write_checkpoint(tmp_path / "checkpoint.1")
    out = tmp_path / "dec"
    proc = run(
        [
            sys.executable,
            str(REPO / "steps/decode.py"),
            "--checkpoint",
            str(ckpt),
            "--data-dir",
            str(d),
            "--out-dir",
            str(out),
            "--mode",
            "ctc_greedy",
            "--nj",
            "2",
            "--cmd",
            f"{SLURM_PY} --mem 1G",
        ],
        env,
    )
    assert proc.returncode == 1
    log = out / "log/decode.2.log"
    assert f"job JOB=2 failed with exit code 1; see {log}" in proc.stderr
    assert "decode job 2: error:" in proc.stderr and "nope" in proc.stderr
    assert "slurm job" in log.read_text() and (out / "jobs/done.1.json").exists()


# ---- the recipe: cmd_backend=slurm ./run.sh, stages 1 and 6 -------------------------------


def test_run_sh_stages_1_and_6_on_slurm_equal_local(cluster: SlurmCluster, tmp_path: Path) -> None:
    wav_dir = tmp_path / "wav"
    lines = []
    for i in range(6):
        write_wav(wav_dir / f"k{i}.wav", 0.6 + 0.1 * i, seed=i)
        lines.append(f"k{i} 一二三\n")
    (tmp_path / "transcript.txt").write_text("".join(lines))
    # the tiny test model: checkpoint.1 and export/ (cached for the session: another test's dir)
    model = exported(tmp_path / "model").parent
    results = {}
    for backend in ("local", "slurm"):
        out, exp = tmp_path / backend / "out", tmp_path / backend / "exp"
        exp.mkdir(parents=True)
        shutil.copytree(model / "export", exp / "export")
        env = dict(slurm_env(cluster), cmd_backend=backend)
        args = [
            "./run.sh",
            "--wav-dir",
            str(wav_dir),
            "--transcript",
            str(tmp_path / "transcript.txt"),
            "--base-model",
            str(model / "checkpoint.1"),
            "--output-dir",
            str(out),
            "--exp-dir",
            str(exp),
            "--feat-config",
            str(_feat_conf(tmp_path, num_mel_bins=20)),
            "--nj",
            "2",
            "--decode-mode",
            "ctc_greedy",
            "--decode-base",
            "false",
        ]
        timings = {}
        for first, last in ((0, 1), (6, 6)):
            started = time.monotonic()
            proc = run([*args, "--stage", str(first), "--stop-stage", str(last)], env, timeout=900)
            timings[f"{first}-{last}"] = round(time.monotonic() - started, 1)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        print(f"run.sh stages 0-1 and 6 with cmd_backend={backend}: {timings} s")
        job_log = (out / "data/train/log/make_feats.2.log").read_text()
        assert ("slurm job" in job_log) == (backend == "slurm")
        dec_log = (exp / "decode/train/onnx_int8/log/decode.1.log").read_text()
        assert ("slurm job" in dec_log) == (backend == "slurm")
        feats = dict(kaldiio.load_scp_sequential(str(out / "data/train/feats.scp")))
        hyps = {
            m: (exp / f"decode/train/{m}/hyp.txt").read_text()
            for m in ("finetuned", "onnx_fp32", "onnx_int8")
        }
        results[backend] = (feats, hyps, (exp / "RESULTS.md").is_file())
    (lf, lh, lr), (sf, sh, sr) = results["local"], results["slurm"]
    assert list(sf) == list(lf) == [f"k{i}" for i in range(6)]
    for utt, x in lf.items():
        np.testing.assert_array_equal(sf[utt], x)
    assert sh == lh and all(lh.values())
    assert lr and sr


def test_slurm_runner_names_a_job_the_scheduler_killed(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    env = dict(slurm_env(cluster), SLURM_PY_STATUS_GRACE="1")
    log2 = tmp_path / "log/k.2.log"
    proc = subprocess.Popen(
        [SLURM_PY, "JOB=1:2", str(tmp_path / "log/k.JOB.log"), "[ JOB = 1 ] || sleep 120"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (log2.exists() and "slurm job" in log2.read_text()):
        assert time.time() < deadline and proc.poll() is None, "job 2 never started"
        time.sleep(0.2)
    task = log2.read_text().split("(slurm job ")[1].split(")")[0]  # e.g. 12_2
    assert run(["scancel", task], env).returncode == 0
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"job JOB=2 (slurm job {task}) ended without an exit status (CANCELLED" in err, err
    assert str(log2) in err and "1 of 2 jobs failed" in err
