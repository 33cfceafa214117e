"""GPU-only checks (marked ``gpu``; skipped on a host without CUDA, where the CPU tests and
``benchmarks/gpu_check.sh --dry-run`` cover the same code): precision choice, a fine-tune with
the default amp, the start-up OOM probe on by default, and resume within tolerance (GPU kernels
are not bit-deterministic; CPU resume is, see test_train_resume.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_support import make_base_model, make_data_dir, write_config

from e2e_asr.model.checkpoint import load_checkpoint
from e2e_asr.train.precision import resolve_precision
from e2e_asr.train.trainer import TrainArgs, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TOLERANCE = 1e-2  # relative L2 distance of all weights, resumed vs uninterrupted


def _args(tmp: Path, exp: str, **kw) -> TrainArgs:
    data = tmp / "data"
    if not data.exists():
        make_data_dir(data, n_train=12, n_dev=2)
        make_base_model(tmp / "base" / "checkpoint.3", data)
        write_config(tmp / "c.yaml", {"train_config": {"snapshot_interval": 2}})
    base = dict(config=tmp / "c.yaml", json_dir=data, exp_dir=tmp / exp, epochs=5,
                base_model=tmp / "base" / "checkpoint.3", device="cuda")  # fmt: skip
    base.update(kw)
    return TrainArgs(**base)


def test_precision_on_this_gpu() -> None:
    p = resolve_precision("auto", torch.device("cuda", 0))
    assert p.mode == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert p.tf32 and p.uses_scaler == (p.mode == "fp16")


def test_finetune_on_gpu_with_default_amp_and_probe(tmp_path: Path) -> None:
    args = _args(tmp_path, "exp")
    assert run(args) == 0
    log = (args.exp_dir / "train.log").read_text()
    assert "precision: " in log and " on cuda " in log
    assert "start-up probe" in log and "peak GPU memory" in log
    state = load_checkpoint(args.exp_dir / "checkpoint.5")["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_resume_on_gpu_within_tolerance(tmp_path: Path, amp: str) -> None:
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    over = [f"train_config.amp={amp}"]
    ref = _args(tmp_path, f"ref_{amp}", overrides=over)
    assert run(ref) == 0
    stopped = _args(tmp_path, f"res_{amp}", overrides=over, max_steps=3)
    assert run(stopped) == 0
    again = _args(tmp_path, f"res_{amp}", overrides=over)
    assert run(again) == 0
    a = load_checkpoint(ref.exp_dir / "checkpoint.5")["model"]
    b = load_checkpoint(again.exp_dir / "checkpoint.5")["model"]
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a)
    den = sum(float(a[k].double().pow(2).sum()) for k in a)
    assert (num / den) ** 0.5 <= TOLERANCE
