"""The Slurm backend (utils/slurm.py, cmd_backend=slurm) against a real single-node cluster.

The cluster (tests/slurm_cluster.py: munged + slurmctld + slurmd on localhost, state in a temp
dir) is started once for this module. As root it installs Debian's slurm-wlm with apt when
missing; the tests skip only when that is impossible (not root and Slurm not installed), and
fail instead of skipping when CI=true.
"""

from __future__ import annotations

import os
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
from slurm_cluster import SlurmCluster, SlurmUnavailable

from e2e_asr.data.datadir import Utterance, write_data_dir

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


def _feat_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "fbank.yaml"  # dither 0: features are deterministic, comparable
    conf.write_text((REPO / "conf/fbank.yaml").read_text().replace("dither: 1.0", "dither: 0.0"))
    return conf


def test_stage1_features_on_slurm_equal_local(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = slurm_env(cluster)
    conf = _feat_conf(tmp_path)
    feats = {}
    for name, cmd in (
        ("local", f"{RUN_PY} --max-jobs-run 2"),
        ("slurm", f"{SLURM_PY} --config {REPO}/conf/slurm.conf --mem 500M"),
    ):
        d = _data_dir(tmp_path / name, 6)
        started = time.monotonic()
        out = run(
            [
                sys.executable,
                str(REPO / "steps/make_feats.py"),
                "--data-dir",
                str(d),
                "--feat-config",
                str(conf),
                "--nj",
                "3",
                "--cmd",
                cmd,
            ],
            env,
        )
        print(f"stage 1, 6 utts, 3 jobs, {name}: {time.monotonic() - started:.1f} s")
        assert out.returncode == 0, out.stdout + out.stderr
        feats[name] = dict(kaldiio.load_scp_sequential(str(d / "feats.scp")))
        if name == "slurm":
            assert "slurm job" in (d / "log/make_feats.2.log").read_text()
    assert list(feats["slurm"]) == list(feats["local"]) == [f"u{i:02d}" for i in range(6)]
    for utt, x in feats["local"].items():
        np.testing.assert_array_equal(feats["slurm"][utt], x)


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
