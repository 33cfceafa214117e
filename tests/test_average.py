"""Checkpoint averaging: seed range semantics, fewer checkpoints than asked, best-by, float64."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model_config

from e2e_asr.export.average import AverageError, average_checkpoints
from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import load_checkpoint, load_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
MC = tiny_model_config(
    idim=8,
    odim=12,
    encoder_linear_units=16,
    encoder_num_blocks=1,
    decoder_linear_units=16,
    decoder_num_block=1,
)
KEY = "ctc.ctc_lo.bias"
# float32 values whose mean is sensitive to the accumulation precision
VALUES = {1: 0.1, 2: 16777216.0, 3: -16777216.0, 4: 0.3}


def _write(exp: Path, epochs: list[int], validation: bool = False) -> None:
    torch.manual_seed(0)
    model = build_model(MC, {"rate": 0.3})
    for e in epochs:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state[KEY] = torch.full_like(state[KEY], VALUES[e])
        payload = {
            "model": state,
            "config": {"model_config": MC, "criterion_config": {"rate": 0.3}},
            "units": ["<blank>", "<unk>", *"abcdefghi", "<sos/eos>"],
            "feature_config": {"type": "fbank", "num_mel_bins": 8},
            "epoch": e,
            "step": 10 * e,
            "optimizer": {"state": {}, "param_groups": []},
            "rng": {"python": 1},
        }
        if validation:
            payload["validation"] = {"dev_loss": 10.0 - e, "dev_cer": float(e % 3)}
        save_checkpoint(exp / f"checkpoint.{e}", payload)


def _expected(epochs: list[int]) -> np.float32:
    f32 = [float(np.float32(VALUES[e])) for e in epochs]  # the stored float32 values
    return np.float32(sum(f32) / len(f32))


def test_range_with_fewer_checkpoints_than_asked(tmp_path: Path) -> None:
    _write(tmp_path, [1, 2, 3])
    warnings: list[str] = []
    used = average_checkpoints(tmp_path, tmp_path / "model.avg", 1, 6, warn=warnings.append)
    assert [p.name for p in used] == ["checkpoint.1", "checkpoint.2", "checkpoint.3"]
    assert any("4, 5 missing" in w and "averaging the 3 found" in w for w in warnings)
    payload = load_checkpoint(tmp_path / "model.avg")
    got = payload["model"][KEY]
    # a float32 running sum loses the 0.1 next to 2**24 and gives 0.0; float64 keeps it
    assert got.dtype == torch.float32
    assert torch.all(got == torch.tensor(_expected([1, 2, 3])))
    assert float(got[0]) == pytest.approx(0.1 / 3, rel=1e-6)
    assert "optimizer" not in payload and "rng" not in payload
    assert payload["units"][-1] == "<sos/eos>" and payload["epoch"] == 3
    model, _ = load_model(tmp_path / "model.avg")
    assert model.odim == 12


def test_seed_semantics_end_is_exclusive(tmp_path: Path) -> None:
    _write(tmp_path, [1, 2, 3, 4])
    used = average_checkpoints(tmp_path, tmp_path / "avg", 2, 4, warn=lambda m: None)
    assert [p.name for p in used] == ["checkpoint.2", "checkpoint.3"]
    got = load_checkpoint(tmp_path / "avg")["model"][KEY]
    assert torch.all(got == torch.tensor(_expected([2, 3])))


def test_no_checkpoint_in_range_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, [1])
    with pytest.raises(AverageError, match="none of checkpoint.5..checkpoint.6"):
        average_checkpoints(tmp_path, tmp_path / "avg", 5, 7, warn=lambda m: None)


def test_best_by_from_payload_and_from_train_log(tmp_path: Path) -> None:
    _write(tmp_path, [1, 2, 3, 4], validation=True)
    # payload: dev_loss = 10 - e -> best two are 4 and 3
    used = average_checkpoints(
        tmp_path, tmp_path / "avg", num=2, best_by="dev_loss", warn=lambda m: None
    )
    assert [p.name for p in used] == ["checkpoint.3", "checkpoint.4"]
    # train_log.jsonl overrides; a truncated last line is tolerated with a warning
    log = [{"epoch": e, "dev_loss": 1.0, "dev_cer": c} for e, c in ((1, 5.0), (2, 1.0), (3, 2.0))]
    text = "\n".join(json.dumps(r) for r in log) + '\n{"epoch": 4, "dev_c'
    (tmp_path / "train_log.jsonl").write_text(text)
    warnings: list[str] = []
    used = average_checkpoints(
        tmp_path, tmp_path / "avg", num=5, best_by="dev_cer", warn=warnings.append
    )
    # epoch 4 falls back to its payload (dev_cer 1.0); 5 asked, 4 available
    assert [p.name for p in used] == [f"checkpoint.{e}" for e in (1, 2, 3, 4)]
    assert any("truncated last line" in w for w in warnings)
    assert any("only 4 have one" in w for w in warnings)


def test_cli(tmp_path: Path, capsys) -> None:
    _write(tmp_path, [2, 3])
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "steps/average_checkpoints.py"),
            str(tmp_path),
            "1",
            "4",
            "--out",
            str(tmp_path / "model.avg"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "1 missing" in r.stderr and "averaged 2 checkpoints" in r.stdout
    # the error path in-process (a second interpreter start costs seconds)
    main = runpy.run_path(str(REPO / "steps/average_checkpoints.py"))["main"]
    assert main([str(tmp_path / "nope"), "1", "4", "--out", str(tmp_path / "x")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_plan_follows_the_run_and_refuses_what_it_cannot_produce() -> None:
    from e2e_asr.export.average import plan_average

    # base checkpoint.29, --epochs 40: the last 3 trained epochs by default
    assert plan_average(29, 40) == (38, 41)
    # a short run (--epochs 31) averages what it trains, never the base's epochs
    assert plan_average(29, 31) == (30, 32)
    assert plan_average(29, 40, last=1) == (40, 41)
    # explicit: seed semantics kept (37 40 -> 37, 38, 39)
    assert plan_average(29, 40, 37, 40) == (37, 40)
    assert plan_average(29, 40, num=5) == 5
    # the seed defaults with a run that ends at 16 (issue 11): refused, with what to give
    with pytest.raises(
        AverageError, match=r"trains epochs 11..16; give --avg-start 14 --avg-end 17"
    ):
        plan_average(10, 16, 37, 40)
    with pytest.raises(AverageError, match="averages checkpoint.28..29"):
        plan_average(29, 40, 28, 30)  # checkpoint.28 is not this run's
    with pytest.raises(AverageError, match="--avg-num 4: this run trains only 2"):
        plan_average(29, 31, num=4)
    with pytest.raises(AverageError, match="trains nothing"):
        plan_average(29, 29)
    with pytest.raises(AverageError, match="both"):
        plan_average(29, 40, 37, None)
