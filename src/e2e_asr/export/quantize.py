"""int8 copies of the ONNX graphs with ONNX Runtime's dynamic quantizer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from e2e_asr.data.io import atomic_path

# The matrix products: they hold nearly all weights and time; the normalisations stay in float.
OP_TYPES = ["MatMul", "Gemm"]
# 7-bit weights. On x86 CPUs without VNNI (AVX2, AVX-512F) ONNX Runtime multiplies uint8
# activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate with full 8-bit
# weights: measured on such a CPU (tiny test model), CTC greedy output differed from PyTorch's
# by 38.7% of tokens with 8-bit weights and 3.9% with 7-bit ones, at the same speed (seed-size
# encoder, 1 thread, CPU time 214 vs 216 ms). The graphs must run on any CPU, so always.
REDUCE_RANGE = True
# The convolutions of the conv2d subsampling that read more than one channel (the 320 -> 320
# 3x3 one of the seed model: ~18% of the fp32 encoder's time at full frame rate) become
# ConvInteger with uint8 weights: ONNX Runtime's uint8 x uint8 kernel widens to int16 before
# multiplying (no saturation, full 8 bits) and is the fast one; with int8 weights ConvInteger
# took 3.7x as long, and the one-channel first convolution is slower quantized (measured on
# an AVX2 CPU without VNNI, 1 thread: 320 -> 320 conv 46 ms fp32, 40 ms uint8, 150 ms int8).
CONV_MIN_IN_CHANNELS = 2


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Weights to 8 bits (per tensor), activations quantized on the fly; written atomically.

    The graph first goes through ONNX Runtime's quantization pre-processing (ONNX shape
    inference and graph optimisation). Its symbolic shape inference is skipped: it cannot
    reason about the conv2d subsampling's floor((T - 3) / 2) lengths and aborts. Then the
    multi-channel convolutions (uint8 weights) and the matrix products (int8 weights) are
    quantized, one pass each.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_path(dst) as tmp:
        pre = tmp.with_name(tmp.name + ".pre.onnx")
        conv = tmp.with_name(tmp.name + ".conv.onnx")
        # the quantizer logs through the root logger; keep its chatter off the user's terminal
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            convs = multi_channel_convs(pre)
            if convs:
                quantize_dynamic(
                    str(pre),
                    str(conv),
                    weight_type=QuantType.QUInt8,
                    op_types_to_quantize=["Conv"],
                    nodes_to_quantize=convs,
                )
            quantize_dynamic(
                str(conv if convs else pre),
                str(tmp),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=OP_TYPES,
                reduce_range=REDUCE_RANGE,
            )
        finally:
            root.setLevel(level)
            pre.unlink(missing_ok=True)
            conv.unlink(missing_ok=True)


def multi_channel_convs(path: str | os.PathLike) -> list[str]:
    """Names of the Conv nodes whose constant weight reads at least CONV_MIN_IN_CHANNELS
    input channels."""
    import onnx

    model = onnx.load(str(Path(path)))
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv"
        and n.name
        and len(weights.get(n.input[1], [])) == 4
        and weights[n.input[1]][1] >= CONV_MIN_IN_CHANNELS
    ]
