"""Guarantee 7: under torchrun DDP (2 gloo processes on CPU), when one rank fails, every rank
exits non-zero within a bounded time and the output names the failing rank; no hang until the
collective timeout (train_config.ddp_timeout, 600 s here).

tests/test_train_ddp.py::test_a_failing_rank_stops_all_ranks_with_its_name already covers a
rank that raises right after an update. Here: a rank that raises during validation (while the
other validates and then waits in the epoch's all-reduce), and a rank SIGKILLed mid-epoch (no
Python error handler runs at all).
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from reliability_helpers import REPO, finish, start
from test_train_support import make_base_model, make_data_dir, write_config

BOUND_S = 60.0  # from the failure to torchrun's exit; generous for a loaded CI machine
FAILURES = {
    # base checkpoint.3 at update 10; 4 batches of 1 over 2 ranks: 2 updates per epoch
    "raise_in_validation": "point=validation,call=1,rank=1,action=raise",
    "sigkill_mid_epoch": "point=update,step=13,rank=1",
}


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rel_ddp")
    data = make_data_dir(tmp / "data", n_train=4, n_dev=1, json_nj=1, same_len=True)
    base = make_base_model(tmp / "base" / "checkpoint.3", data)
    conf = write_config(tmp / "conf.yaml", {"jconfig": {"batch_size": 1}})
    procs = {}
    for name, spec in FAILURES.items():
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", str(REPO / "steps" / "train.py"),
            "--config", str(conf), "--json-dir", str(data), "--json-nj", "1",
            "--exp-dir", str(tmp / name), "--epochs", "6", "--base-model", str(base),
            "--device", "cpu",
        ]  # fmt: skip
        procs[name] = start(cmd, tmp / f"{name}.out", kill=spec)
    out = {"tmp": tmp}
    ends: dict[str, float] = {}
    deadline = time.time() + 300
    while len(ends) < len(procs) and time.time() < deadline:  # exit times, side by side
        for name, p in procs.items():
            if name not in ends and p.popen.poll() is not None:
                ends[name] = time.time()
        time.sleep(0.05)
    for name, p in procs.items():
        rc = finish(p, timeout=1)
        m = re.search(r"reliability_inject: .*\(.*t=(\d+\.\d+)\)", p.text)
        took = ends.get(name, float("inf")) - float(m.group(1)) if m else float("inf")
        out[name] = (rc, took, p.text)
    return out


@pytest.mark.parametrize("name", list(FAILURES))
def test_one_failing_rank_stops_every_rank_naming_it(failed: dict, name: str) -> None:
    rc, seconds, text = failed[name]
    print(f"ddp {name}: torchrun exit {rc}, {seconds:.1f} s after rank 1 failed")
    assert rc != 0, text[-3000:]
    assert seconds < BOUND_S, text[-3000:]
    if name == "raise_in_validation":
        assert (
            "rank 1 failed: RuntimeError: reliability_inject: failure injected at validation"
            in text
        )
    else:
        assert "reliability_inject: SIGKILL at update 13 (rank 1)" in text
        # torchrun's failure summary names the rank and the signal
        assert "rank      : 1 (local_rank: 1)" in text and "exitcode  : -9" in text, text[-3000:]
    # rank 0 did not go on alone: no later checkpoint, no "training done"
    exp = failed["tmp"] / name
    assert "training done" not in text
    assert not (exp / "checkpoint.6").exists() and not (exp / "checkpoint.5").exists()
