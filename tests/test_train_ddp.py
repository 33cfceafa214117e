"""DDP under torchrun with 2 gloo processes on CPU: the same update as one process on the
combined batch, and a failing rank stops the whole job (no hang) with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.model.checkpoint import load_checkpoint
from e2e_asr.train.trainer import TrainArgs, run

REPO = Path(__file__).resolve().parents[1]


def _torchrun(
    args: list[str], env_extra: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(REPO / "steps" / "train.py"),
        *args,
        "--device",
        "cpu",
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    # equal lengths: padding is identical whether 2 or 4 utterances share a batch
    data = make_data_dir(tmp / "data", n_train=4, n_dev=1, json_nj=1, same_len=True)
    base = make_base_model(tmp / "base" / "checkpoint.3", data)
    return {"tmp": tmp, "data": data, "base": base}


def test_two_gloo_ranks_equal_one_process_on_the_combined_batch(setup: dict) -> None:
    tmp, data, base = setup["tmp"], setup["data"], setup["base"]
    # one process, one batch of all 4 utterances
    conf1 = write_config(tmp / "one.yaml", {"jconfig": {"batch_size": 4}})
    one = TrainArgs(
        config=conf1,
        json_dir=data,
        exp_dir=tmp / "one",
        json_nj=1,
        epochs=4,
        base_model=base,
        max_steps=1,
        device="cpu",
    )
    torch.set_num_threads(1)
    assert run(one) == 0
    # two processes, a batch of 2 each; DDP averages their gradients
    conf2 = write_config(tmp / "two.yaml", {"jconfig": {"batch_size": 2}})
    res = _torchrun(
        [
            "--config",
            str(conf2),
            "--json-dir",
            str(data),
            "--json-nj",
            "1",
            "--exp-dir",
            str(tmp / "two"),
            "--epochs",
            "4",
            "--base-model",
            str(base),
            "--max-steps",
            "1",
        ],
        {},
        timeout=90,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a = load_checkpoint(tmp / "one" / "snapshot")
    b = load_checkpoint(tmp / "two" / "snapshot")
    assert a["step"] == b["step"] == 11
    assert b["train_state"]["world_size"] == 2 and len(b["rng"]) == 2
    start = load_checkpoint(base)["model"]
    moved = 0
    for k, v in a["model"].items():
        if k.endswith("linear_k.bias"):
            # a key bias shifts every score of a query equally, so softmax makes its true
            # gradient zero; Adam's first step blows the rounding noise up to +-lr
            continue
        assert torch.allclose(v, b["model"][k], atol=1e-5, rtol=1e-4), k
        moved += int(not torch.equal(v, start[k]))
    assert moved > 10  # the update did change the weights


def test_a_failing_rank_stops_all_ranks_with_its_name(setup: dict) -> None:
    tmp, data, base = setup["tmp"], setup["data"], setup["base"]
    conf = write_config(tmp / "fail.yaml", {"jconfig": {"batch_size": 1}})
    t0 = time.time()
    res = _torchrun(
        [
            "--config",
            str(conf),
            "--json-dir",
            str(data),
            "--json-nj",
            "1",
            "--exp-dir",
            str(tmp / "fail"),
            "--epochs",
            "5",
            "--base-model",
            str(base),
        ],
        {
            "RELIABILITY_KILL": "point=update,step=12,rank=1,action=raise",
            "PYTHONPATH": str(REPO / "tests" / "reliability_inject"),
        },
        timeout=120,
    )
    assert res.returncode != 0
    assert "rank 1 failed" in res.stderr
    assert time.time() - t0 < 120
    assert not (tmp / "fail" / "checkpoint.5").exists()
