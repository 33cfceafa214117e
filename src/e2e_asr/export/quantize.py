"""int8 copies of the ONNX graphs: weight-only (the encoder) and dynamic (the decoders).

Weight-only (``quantize_weights_int8``): the weights of the matrix products and convolutions
are stored as int8 with one scale per output channel and turned back into float by a ``Cast``
and a ``Mul`` that ONNX Runtime folds into constants when it loads the graph; all arithmetic
stays float, at fp32 speed. Nothing depends on rounding activations, so the graph answers
slightly different inputs like the fp32 graph does: sherpa-onnx's fbank and ours (which
differ in the last digits) give the same hypotheses. Measured on the demo's fine-tuned model
(target test, 200 utterances, CTC greedy; identical to sherpa-onnx / unchanged for the audio
x 1.001 / 1-thread encoder CPU time vs fp32): fp32 99.5% / 100% / 1.00; weight-only int8 100% /
99.5% / 1.00; dynamic int8, as the encoder was exported before (its multi-channel subsampling
convolution also quantized, as ConvInteger) 91% / 93% / 0.90 (91.5% / 94% / 0.75 without the
ConvInteger); static int8 (``quantize_static`` calibrated
on the dev set's features: QDQ or QOperator, MinMax, Percentile or Entropy, per-tensor or
per-channel weights, with or without quantized outputs) 83-96% / 84-96% / 0.84-0.98. Any
rounding of the activations to 8 bits, with a fixed scale or not, flips hypotheses on tiny
input differences. Not ``DequantizeLinear`` either: ONNX Runtime 1.32 fuses an int8
``DequantizeLinear`` -> ``MatMul`` into ``MatMulNBits`` at accuracy level 4, which quantizes
the activations again (per block, on each call; 96% identical, 1.23x the time).

Dynamic (``quantize_int8``): ONNX Runtime's dynamic quantizer, activations quantized on each
call with a scale from that call's values; int8 kernels, faster than float. For the decoder
graphs, which only our own decoding runs.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from e2e_asr.data.io import atomic_path

# what metadata.json records for each int8 graph
WEIGHT_ONLY = "weight_only_int8"
DYNAMIC = "dynamic_int8"
# the weights weight-only quantization stores as int8: input 1 of these ops when it is a
# constant of at least two dimensions (biases and normalisations stay float)
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")

# The matrix products: they hold nearly all weights and time; the normalisations stay in float.
OP_TYPES = ["MatMul", "Gemm"]
# 7-bit weights. On x86 CPUs without VNNI (AVX2, AVX-512F) ONNX Runtime multiplies uint8
# activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate with full 8-bit
# weights: measured on such a CPU (tiny test model), CTC greedy output differed from PyTorch's
# by 38.7% of tokens with 8-bit weights and 3.9% with 7-bit ones, at the same speed (seed-size
# encoder, 1 thread, CPU time 214 vs 216 ms). The graphs must run on any CPU, so always.
REDUCE_RANGE = True


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Weights to 8 bits (per tensor), activations quantized on the fly; written atomically.

    The graph first goes through ONNX Runtime's quantization pre-processing (ONNX shape
    inference and graph optimisation). Its symbolic shape inference is skipped: it cannot
    reason about the conv2d subsampling's floor((T - 3) / 2) lengths and aborts. Then the
    matrix products are quantized (int8 weights). Used for the decoder graphs, which hold no
    convolution (the encoder, with its conv2d subsampling, is weight-only).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_path(dst) as tmp:
        pre = tmp.with_name(tmp.name + ".pre.onnx")
        # the quantizer logs through the root logger; keep its chatter off the user's terminal
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_dynamic(
                str(pre),
                str(tmp),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=OP_TYPES,
                reduce_range=REDUCE_RANGE,
            )
        finally:
            root.setLevel(level)
            pre.unlink(missing_ok=True)


def quantize_weights_int8(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """int8 weights, float arithmetic; written atomically. Returns how many weight tensors are
    stored as int8.

    Each weight of ``WEIGHT_OPS`` becomes an int8 initializer (symmetric, -127..127, one scale
    per output channel: MatMul's last axis, Gemm's by ``transB``, Conv's first) and
    ``Mul(Cast(q, float), scale)`` under the weight's old name, so every reader of the weight
    gets its dequantized values. The graph keeps its inputs, outputs and metadata.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    graph_inputs = {i.name for i in g.input}
    axes: dict[str, int] = {}
    for node in g.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        name = node.input[1]
        init = inits.get(name)
        if (
            init is None
            or name in graph_inputs
            or name in axes
            or init.data_type != TensorProto.FLOAT
            or len(init.dims) < 2
        ):
            continue
        if node.op_type == "MatMul":
            axes[name] = len(init.dims) - 1
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            axes[name] = 0 if trans_b else 1
        else:
            axes[name] = 0
    dequantize = []
    for name, axis in axes.items():
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        other = tuple(d for d in range(w.ndim) if d != axis)
        amax = np.abs(w).max(axis=other, keepdims=True)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        g.initializer.remove(inits[name])
        g.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}.int8"),
                numpy_helper.from_array(scale, f"{name}.scale"),
            ]
        )
        dequantize += [
            helper.make_node(
                "Cast", [f"{name}.int8"], [f"{name}.float"], f"{name}.cast", to=TensorProto.FLOAT
            ),
            helper.make_node(
                "Mul", [f"{name}.float", f"{name}.scale"], [name], f"{name}.dequantize"
            ),
        ]
    # first in the node list: they read only initializers, and topological order holds
    nodes = dequantize + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
    return len(axes)
