"""``benchmarks/gpu_check.sh --dry-run``: the GPU acceptance sequence on CPU, on a toy demo
cache (tiny base, synthetic json, three wavs to decode). Every check must pass; the
kill -9 + re-run must end bit-identical on CPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import REPO, recipe_env
from conftest_data import write_wav
from test_train_support import make_base_model, make_data_dir, write_config


def _toy_cache(root: Path) -> Path:
    json_dir = make_data_dir(
        root / "base_data" / "preparejson" / "split_train_dev", n_train=24, n_dev=2, json_nj=1
    )
    make_base_model(root / "base" / "checkpoint.3", json_dir, epoch=3, step=10)
    dev = root / "base_data" / "data" / "dev"
    dev.mkdir(parents=True)
    wavs = [write_wav(root / "wav" / f"d{i}.wav", 1.0 + 0.3 * i, seed=i) for i in range(3)]
    (dev / "wav.scp").write_text("".join(f"d{i} {w}\n" for i, w in enumerate(wavs)))
    (dev / "text").write_text("d0 abc\nd1 bcd\nd2 cde\n")
    return root


def test_gpu_check_dry_run_passes_on_a_toy_cache(tmp_path: Path) -> None:
    demo = _toy_cache(tmp_path / "demo")
    conf = write_config(tmp_path / "toy.yaml", {"train_config": {"dev_cer": False}})
    env = {**recipe_env(), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            str(REPO / "benchmarks" / "gpu_check.sh"),
            "--dry-run",
            "--demo-dir",
            str(demo),
            "--work-dir",
            str(tmp_path / "work"),
            "--train-config",
            str(conf),
            "--snapshot-every",
            "2",
        ],  # fmt: skip
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for name in ("train_off", "train_bf16", "kill_resume_off", "ddp_2proc", "decode"):
        assert f"PASS  {name}" in out, out[-4000:]
    assert "bit-identical: True" in out and "frames/s" in out
    assert "gpu_check: 0 failed" in out
