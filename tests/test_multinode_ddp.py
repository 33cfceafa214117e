"""Multi-node training: two torchrun agents as two nodes (c10d rendezvous on 127.0.0.1, gloo on
CPU, one process each) train exactly like one node with two processes on the same data.

Driven only through the steps/train.py command line, as run.sh and a cluster job do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.model.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 5  # the base model is checkpoint.3: epochs 4 and 5, one update each


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(setup: dict, exp: Path) -> list[str]:
    return [
        str(REPO / "steps" / "train.py"),
        "--config",
        str(setup["conf"]),
        "--json-dir",
        str(setup["data"]),
        "--json-nj",
        "1",
        "--exp-dir",
        str(exp),
        "--epochs",
        str(EPOCHS),
        "--base-model",
        str(setup["base"]),
        "--device",
        "cpu",
    ]


def _torchrun(*opts: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *opts]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("multinode")
    # 4 utterances of equal length: one batch of 2 per rank per epoch
    data = make_data_dir(tmp / "data", n_train=4, n_dev=1, json_nj=1, same_len=True)
    base = make_base_model(tmp / "base" / "checkpoint.3", data)
    conf = write_config(tmp / "train.yaml", {"jconfig": {"batch_size": 2}})
    return {"tmp": tmp, "data": data, "base": base, "conf": conf}


def test_two_nodes_train_like_one_node_with_two_processes(setup: dict) -> None:
    tmp = setup["tmp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one = subprocess.run(
        _torchrun("--standalone", "--nproc-per-node", "2", *_train_args(setup, tmp / "one")),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = []
    for rank in (0, 1):
        rdzv = [
            "--nnodes", "2",
            "--node-rank", str(rank),
            "--nproc-per-node", "1",
            "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint,
            "--rdzv-id", "multinode-test",
            "--rdzv-conf", f"is_host={int(rank == 0)}",
            "--max-restarts", "0",
        ]  # fmt: skip
        log = open(tmp / f"node{rank}.log", "w")  # noqa: SIM115 (closed below)
        nodes.append(
            (
                subprocess.Popen(
                    _torchrun(*rdzv, *_train_args(setup, tmp / "two")),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        )
    codes = []
    for proc, log in nodes:
        try:
            codes.append(proc.wait(timeout=300))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            log.close()
    logs = "".join((tmp / f"node{r}.log").read_text()[-2000:] for r in (0, 1))
    assert codes == [0, 0], logs

    a = load_checkpoint(tmp / "one" / f"checkpoint.{EPOCHS}")
    b = load_checkpoint(tmp / "two" / f"checkpoint.{EPOCHS}")
    start = load_checkpoint(setup["base"])["model"]
    assert a["epoch"] == b["epoch"] == EPOCHS
    moved = 0
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6, rtol=1e-5), k
        moved += int(not torch.equal(v, start[k]))
    assert moved > 10  # training did change the weights
