"""run.sh and stage 3 on several nodes: nodes other than 0 run only stage 3."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cmd


def test_non_zero_node_rank_runs_only_stage_3(tmp_path: Path) -> None:
    opts = "--nnodes 2 --node-rank 1 --rdzv-endpoint head:29400"
    res = run_cmd(
        [
            "./run.sh",
            "--stage",
            "0",
            "--stop-stage",
            "2",
            "--wav-dir",
            str(tmp_path / "wav"),
            "--transcript",
            str(tmp_path / "t.txt"),
            "--base-model",
            str(tmp_path / "b.pt"),
            "--output-dir",
            str(tmp_path / "out"),
            "--exp-dir",
            str(tmp_path / "exp"),
            "--torchrun-opts",
            opts,
        ],  # fmt: skip
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for n, name in ((0, "data"), (1, "features"), (2, "json")):
        assert f"==== stage {n}: {name}: skipped on node 1 (node 0 runs it) ====" in res.stdout
    assert not (tmp_path / "out").exists()  # nothing of stages 0-2 was made on this node
