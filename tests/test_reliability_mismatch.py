"""Guarantee 8: a base model that does not fit the data (feature dim, feature type/options,
units, CMVN) stops ``steps/train.py`` with a message that says what to change, before any
training step, in seconds.

Each case is the real command in a subprocess; "before any training step" is asserted on the
log (no "training epochs" line, no update line, no checkpoint), and the wall time of the whole
command (interpreter start included) is printed. tests/test_train_loop.py::
test_mismatch_fails_before_training covers the same checks in-process.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import REPO, finish, start
from test_train_support import DIM, UNITS, make_base_model, make_data_dir, write_config

from e2e_asr.data.cmvn import write_cmvn

# case -> (what the message must say, the hint it must give)
CASES = {
    "feature_dim": ("features have dim 8 but", "Re-extract features"),
    "feature_type": ("does not match the base model's feature_config", "Extract features with"),
    "units": ("differs from the units of", "Tokenize the data with the base model's units"),
    "cmvn_missing": ("holds no CMVN stats", "set train_config.cmvn: data"),
    "cmvn_dim": ("CMVN dim 5 but the model idim is 8", "re-run stage 2 on features made with"),
}


def _case(tmp: Path, name: str, data: Path) -> tuple[Path, Path, list[str]]:
    """(base checkpoint, json dir, extra arguments) for one mismatch."""
    base = tmp / name / "base" / "checkpoint.3"
    extra: list[str] = []
    if name == "feature_dim":
        make_base_model(base, data, changes={"model_config": {"idim": 10}}, cmvn=False)
    elif name == "feature_type":
        make_base_model(base, data, features={"type": "mfcc_hires", "num_ceps": DIM,
                                              "num_mel_bins": DIM})  # fmt: skip
    elif name == "units":
        make_base_model(base, data, units=UNITS[:2] + ["x", "y", "z", "w", "v"] + UNITS[-1:])
    elif name == "cmvn_missing":
        make_base_model(base, data, cmvn=False)
    else:
        make_base_model(base, data)
        data = shutil.copytree(data, tmp / name / "json")
        stats = np.zeros((2, 6))
        stats[0, 5] = 10
        write_cmvn(data / "cmvn.ark", stats)
        extra = ["--set", "train_config.cmvn=data"]
    return base, data, extra


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rel_mismatch")
    data = make_data_dir(tmp / "json", n_train=4, n_dev=1)
    conf = write_config(tmp / "conf.yaml")
    out: dict = {"tmp": tmp}
    names = list(CASES)
    for i in range(0, len(names), 2):  # two at a time on two cores
        procs = {}
        for name in names[i : i + 2]:
            base, json_dir, extra = _case(tmp, name, data)
            cmd = [
                sys.executable, str(REPO / "steps" / "train.py"), "--config", str(conf),
                "--json-dir", str(json_dir), "--json-nj", "2", "--exp-dir", str(tmp / name / "exp"),
                "--epochs", "5", "--base-model", str(base), "--device", "cpu", *extra,
            ]  # fmt: skip
            procs[name] = start(cmd, tmp / f"{name}.out")
        for name, p in procs.items():
            rc = finish(p, timeout=120)
            out[name] = (rc, time.time() - p.t0, p.text)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_mismatch_is_a_clear_error_before_the_first_step(results: dict, name: str) -> None:
    rc, seconds, text = results[name]
    print(f"mismatch {name}: exit {rc} after {seconds:.1f} s (whole command)")
    assert rc == 1, text[-3000:]
    line = next((x for x in text.splitlines() if "rank 0 failed" in x), "")
    what, hint = CASES[name]
    assert what in line and hint in line, text[-3000:]
    assert "Traceback" not in text
    # before any training step: the loop never started, nothing was written
    assert "training epochs" not in text and " update " not in text, text[-3000:]
    exp = results["tmp"] / name / "exp"
    assert not list(exp.glob("checkpoint.*")) and not (exp / "snapshot").exists()
