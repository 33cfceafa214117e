"""``train_config.compile``: blocks are wrapped in place, names and weights unchanged.

Compiling with inductor happens at the first forward (minutes on this CPU), so the speed-up itself
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


def test_compiled_blocks_run_a_forward_pass_equal_to_eager(tmp_path: Path, monkeypatch) -> None:
    """A real compiled forward: TorchDynamo captures the blocks' graphs and runs them. The
    backend is dynamo's ``eager`` (graph capture without inductor code generation, which takes
    minutes on this CPU); the result must equal the uncompiled model's."""
    import torch
    from torch._dynamo.utils import counters

    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    model = build_model(cfg["model_config"], cfg["criterion_config"]).eval()
    torch.manual_seed(0)
    x, lens = torch.randn(2, 50, cfg["model_config"]["idim"]), torch.tensor([50, 40])
    with torch.no_grad():
        eager = model.encode(x, lens)[0]
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager", **kw)
    )
    torch._dynamo.reset()
    counters.clear()
    compile_blocks(model)
    with torch.no_grad():
        compiled = model.encode(x, lens)[0]
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really compiled something
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    torch._dynamo.reset()
