"""Weight-only int8 (export/quantize.py) on a small hand-made graph: which weights, the
per-channel scales, float arithmetic, and how close it stays to the fp32 graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from e2e_asr.decode.onnx_scorer import make_session
from e2e_asr.export.quantize import quantize_weights_int8


def _graph(path: Path) -> dict[str, np.ndarray]:
    """x [2, 3, 8, 8] -> Conv (4 out channels) -> flatten -> MatMul [256, 6] -> Gemm (transB,
    [5, 6]) -> + bias; the MatMul weight is also added to a second output (a shared weight)."""
    rng = np.random.default_rng(0)
    w = {
        "conv_w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "mm_w": rng.standard_normal((256, 6)).astype(np.float32),
        "gemm_w": rng.standard_normal((5, 6)).astype(np.float32),
        "bias": rng.standard_normal(5).astype(np.float32),
        "shape": np.array([2, 256], dtype=np.int64),
    }
    w["mm_w"][:, 2] *= 100.0  # one channel far larger: per-channel scales keep the others fine
    w["gemm_w"][3] = 0.0  # an all-zero channel
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "mm_w"], ["m"]),
        helper.make_node("Gemm", ["m", "gemm_w", "bias"], ["y"], transB=1),
        helper.make_node("ReduceSum", ["mm_w"], ["s"], keepdims=0),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def test_weights_become_int8_per_channel_and_compute_in_float(tmp_path: Path) -> None:
    w = _graph(tmp_path / "f.onnx")
    assert quantize_weights_int8(tmp_path / "f.onnx", tmp_path / "q.onnx") == 3
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert {k for k, v in inits.items() if v.dtype == np.int8} == {
        "conv_w.int8",
        "mm_w.int8",
        "gemm_w.int8",
    }
    assert inits["bias"].dtype == np.float32  # one-dimensional: stays float
    # one scale per output channel: Conv's first axis, MatMul's last, Gemm (transB) its first
    assert inits["conv_w.scale"].shape == (4, 1, 1, 1)
    assert inits["mm_w.scale"].shape == (1, 6)
    assert inits["gemm_w.scale"].shape == (5, 1)
    for name in ("conv_w", "mm_w", "gemm_w"):
        back = inits[f"{name}.int8"].astype(np.float32) * inits[f"{name}.scale"]
        # rounding to the nearest step: at most half a step of that channel
        assert np.all(np.abs(back - w[name]) <= inits[f"{name}.scale"] / 2 + 1e-7)
    assert np.all(inits["gemm_w.int8"][3] == 0)
    assert {n.op_type for n in q.graph.node} == {"Conv", "Reshape", "MatMul", "Gemm",
                                                 "ReduceSum", "Cast", "Mul"}  # fmt: skip

    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, s = make_session(tmp_path / "f.onnx", 1).run(None, {"x": x})
    qy, qs = make_session(tmp_path / "q.onnx", 1).run(None, {"x": x})
    assert np.abs(qy - y).max() <= 0.02 * np.abs(y).max()
    # float arithmetic: the graph equals the fp32 graph with the dequantized weights
    ref = onnx.load(str(tmp_path / "f.onnx"))
    for init in ref.graph.initializer:
        if f"{init.name}.int8" in inits:
            back = inits[f"{init.name}.int8"].astype(np.float32) * inits[f"{init.name}.scale"]
            init.CopyFrom(numpy_helper.from_array(back, init.name))
    onnx.save(ref, str(tmp_path / "d.onnx"))
    dy, ds = make_session(tmp_path / "d.onnx", 1).run(None, {"x": x})
    assert np.abs(qy - dy).max() <= 1e-5
    assert abs(qs - ds) <= 1e-5 * abs(ds)  # the shared weight's other reader gets it too
