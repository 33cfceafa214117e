"""``train_config.compile``: blocks are wrapped in place, names and weights unchanged.

Compiling actually happens at the first forward (minutes on this CPU), so the speed-up itself
is measured by ``benchmarks/bench_train.py --compile``, not here.
"""

from __future__ import annotations

from pathlib import Path

from test_train_support import write_config

from e2e_asr.model import build_model
from e2e_asr.train.compile import compile_blocks
from e2e_asr.train.config import load_train_config


def test_compile_blocks_keeps_state_dict_names(tmp_path: Path) -> None:
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    model = build_model(cfg["model_config"], cfg["criterion_config"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert compile_blocks(model) == 3  # 2 encoder + 1 decoder blocks
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(bool((after[k] == before[k]).all()) for k in before)
    assert all(layer._compiled_call_impl is not None for layer in model.encoder.encoders)
