"""DDP under torchrun with 2 gloo processes on CPU: the same update as one process on the
combined batch, a failing rank stops the whole job (no hang) with a message naming it, and a
LoRA run keeps the ranks' (merged) models equal."""

from __future__ import annotations

import json
import os
import shutil
import socket
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
    args: list[str], env_extra: dict[str, str], timeout: float, script: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script or REPO / "steps" / "train.py"),
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


# a steps/train.py that, on every rank, saves that rank's merged model once training is done
DUMP_EACH_RANK = """
import os, runpy, sys
import torch
from e2e_asr.train import lora, trainer

fit = trainer.Trainer.fit


def fit_and_dump(self):
    fit(self)
    merged, _ = lora.merged_state(self.model)
    torch.save(merged, os.path.join(os.environ["DUMP_DIR"], f"rank{self.info.rank}.pt"))


trainer.Trainer.fit = fit_and_dump
sys.argv[0] = os.environ["TRAIN_PY"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_lora_under_two_gloo_ranks_trains_and_keeps_the_ranks_equal(setup: dict) -> None:
    tmp, data, base = setup["tmp"], setup["data"], setup["base"]
    lora_cfg = {"rank": 4, "alpha": 8, "target_modules": ["linear_q", "linear_v", "w_1"]}
    conf = write_config(
        tmp / "lora.yaml", {"jconfig": {"batch_size": 1}, "train_config": {"lora": lora_cfg}}
    )
    script = tmp / "train_dump.py"
    script.write_text(DUMP_EACH_RANK)
    dump = tmp / "lora_dump"
    dump.mkdir()
    res = _torchrun(
        ["--config", str(conf), "--json-dir", str(data), "--json-nj", "1",
         "--exp-dir", str(tmp / "lora"), "--epochs", "4", "--base-model", str(base)],
        {"DUMP_DIR": str(dump), "TRAIN_PY": str(REPO / "steps" / "train.py")},
        timeout=180,
        script=script,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ck = load_checkpoint(tmp / "lora" / "checkpoint.4")
    assert ck["step"] == 12  # 4 utterances, a batch of 1 on each of 2 ranks: 2 updates
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    start = load_checkpoint(base)["model"]
    adapted = set(ck["lora"]["base"])
    assert len(adapted) == 2 * 3 + 5 and set(ranks[0]) == set(ranks[1]) == set(start)
    for key, value in start.items():
        # the ranks saw different utterances; DDP averaged the adapters' gradients
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.equal(ranks[0][key], ck["model"][key]), key
        # only the adapted layers' weights moved (BatchNorm statistics aside)
        if "running_" not in key and "num_batches_tracked" not in key:
            assert torch.equal(value, ck["model"][key]) != (key in adapted), key
    n_adapter = sum(t.numel() for t in ck["lora"]["adapters"].values())
    assert f"trainable parameters: {n_adapter} of" in (tmp / "lora" / "train.log").read_text()


# ----------------------------------------------------------------------------- resume, 2 ranks
@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two gloo ranks: an uninterrupted epoch, and the same epoch stopped after 2 of its 4
    updates (a mid-epoch snapshot) and continued by re-running the command."""
    tmp = tmp_path_factory.mktemp("ddp_resume")
    data = make_data_dir(tmp / "data", n_train=8, n_dev=1, json_nj=1, same_len=True)
    base = make_base_model(tmp / "base" / "checkpoint.3", data)
    conf = write_config(tmp / "c.yaml", {"jconfig": {"batch_size": 1}})

    def args(exp: str, *extra: str) -> list[str]:
        return ["--config", str(conf), "--json-dir", str(data), "--exp-dir", str(tmp / exp),
                "--epochs", "4", "--base-model", str(base), *extra]  # fmt: skip

    runs = {
        "ref": _torchrun(args("ref"), {}, timeout=120),
        "stopped": _torchrun(args("stopped", "--max-steps", "2"), {}, timeout=120),
    }
    shutil.copytree(tmp / "stopped", tmp / "node0")  # a state only "node 0" sees
    runs["again"] = _torchrun(args("stopped"), {}, timeout=120)
    return {"tmp": tmp, "runs": runs, "args": args}


def test_epoch_loss_and_weights_after_a_mid_epoch_resume_with_two_ranks(resumed: dict) -> None:
    tmp, runs = resumed["tmp"], resumed["runs"]
    for name, res in runs.items():
        assert res.returncode == 0, (name, res.stderr[-3000:])
    assert "resuming from" in runs["again"].stderr
    snap = load_checkpoint(tmp / "node0" / "snapshot")
    assert snap["step"] == 12 and snap["train_state"]["batch"] == 2
    # each rank's own loss sums are in the state (not rank 0's twice)
    assert len(snap["train_state"]["loss_sums"]) == 2
    ref = [json.loads(x) for x in (tmp / "ref" / "train_log.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (tmp / "stopped" / "train_log.jsonl").read_text().splitlines()]
    assert got[-1]["train_loss"] == pytest.approx(ref[-1]["train_loss"], rel=1e-9, abs=1e-12)
    a = load_checkpoint(tmp / "ref" / "checkpoint.4")["model"]
    b = load_checkpoint(tmp / "stopped" / "checkpoint.4")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ranks_with_different_exp_dir_states_fail_naming_both(resumed: dict) -> None:
    """A per-node exp_dir (not shared storage): node 0 holds a snapshot, node 1 nothing. Rank
    0's resume decision is broadcast; rank 1 cannot follow it; both stop and say why."""
    tmp = resumed["tmp"]
    with socket.socket() as sock:  # a free port for the two ranks' rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}  # fmt: skip
        cmd = [sys.executable, str(REPO / "steps" / "train.py"), *resumed["args"](f"node{rank}"),
               "--device", "cpu"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 1, err[-3000:]
        assert "ranks disagree on the training state" in err, err[-3000:]
        assert f"rank 0 sees {tmp / 'node0'}: snapshot (" in err
        assert f"rank 1 sees {tmp / 'node1'}: no training state; resume point: cannot load" in err
        assert "shared by every node" in err
    assert not (tmp / "node1" / "checkpoint.4").exists()
    assert load_checkpoint(tmp / "node0" / "snapshot")["step"] == 12  # untouched
