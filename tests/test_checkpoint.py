"""Checkpoint I/O: round trip, atomicity, corrupt and malicious files refused."""

import os
import pickle

import pytest
import torch
from model_fixtures import tiny_model_config

from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

MC = tiny_model_config(encoder_num_blocks=1, decoder_num_block=1)
CC = {"rate": 0.3, "smoothing": 0.1}


def make_payload(model, epoch=3):
    return {
        "model": model.state_dict(),
        "config": {"model_config": dict(MC), "criterion_config": dict(CC), "decode_config": {}},
        "units": ["<blank>", "<unk>"] + [chr(0x4E00 + i) for i in range(7)] + ["<sos/eos>"],
        "feature_config": {"type": "fbank", "dim": 20},
        "epoch": epoch,
        "step": 1234,
        "rng": {"torch": torch.get_rng_state()},
        "validation": {"dev_loss": 1.5, "dev_acc": 0.5, "dev_cer": 0.25},
    }


def test_round_trip_restores_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model(MC, CC).eval()
    model.set_cmvn(torch.randn(20), torch.rand(20) + 0.5)
    path = tmp_path / "checkpoint.3"
    save_checkpoint(path, make_payload(model))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.3"]  # no temp file left
    loaded, payload = load_model(path)
    assert not loaded.training
    assert payload["epoch"] == 3 and payload["step"] == 1234 and payload["units"][-1] == "<sos/eos>"
    feats, lens = torch.randn(1, 30, 20), torch.tensor([30])
    with torch.no_grad():
        a, _ = model.encode(feats, lens)
        b, _ = loaded.encode(feats, lens)
    assert torch.equal(a, b)
    assert torch.equal(loaded.global_cmvn.istd, model.global_cmvn.istd)


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.7"
    save_checkpoint(path, make_payload(build_model(MC, CC)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.7"):
        load_checkpoint(path)


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "checkpoint.1"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "checkpoint.99")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    # Also a bare pickle file (not torch's zip format).
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="raw.pt"):
        load_checkpoint(raw)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_weights_of_another_config_are_refused(tmp_path):
    payload = make_payload(build_model(MC, CC))
    payload["config"]["model_config"]["odim"] = 11
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(payload)


def test_latest_checkpoint_skips_broken(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    model = build_model(MC, CC)
    for n in (2, 10):
        save_checkpoint(tmp_path / f"checkpoint.{n}", make_payload(model, n))
    (tmp_path / "checkpoint.11").write_bytes(b"\0" * 10)  # a crashed write
    (tmp_path / "checkpoint.best").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint.10"


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "checkpoint.1"
    save_checkpoint(path, {"model": {}, "epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 - any pickling failure
        save_checkpoint(path, {"model": {}, "bad": lambda: 0})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.1"]


def test_one_checkpoint_scanner_for_every_stage(tmp_path):
    """model.checkpoint.list_checkpoints is THE checkpoint.N scanner: averaging and
    utils/latest_checkpoint.py see exactly what it lists."""
    import subprocess
    import sys
    from pathlib import Path

    from e2e_asr.export.average import list_checkpoints as average_list
    from e2e_asr.model.checkpoint import list_checkpoints

    model = build_model(MC, CC)
    for n in (2, 10, 9):
        save_checkpoint(tmp_path / f"checkpoint.{n}", {"model": model.state_dict(), "epoch": n})
    (tmp_path / "checkpoint.11").mkdir()  # a directory is not a checkpoint
    for name in ("checkpoint.avg", "checkpoint.5.tmp", ".checkpoint.12.x.tmp", "checkpoint.-1"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "checkpoint.12").write_bytes(b"truncated")
    listed = list_checkpoints(tmp_path)
    assert [n for n, _ in listed] == [12, 10, 9, 2]
    assert average_list(tmp_path) == dict(listed)
    assert list_checkpoints(tmp_path / "missing") == []
    script = Path(__file__).resolve().parents[1] / "utils" / "latest_checkpoint.py"
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip() == str(tmp_path / "checkpoint.10")
    assert f"skipping {tmp_path / 'checkpoint.12'}" in res.stderr
    assert oct((tmp_path / "checkpoint.10").stat().st_mode & 0o777) != oct(0o600)
