"""int8 copies of the ONNX graphs with ONNX Runtime's dynamic quantizer."""

from __future__ import annotations

import logging
import os

from e2e_asr.data.io import atomic_path

# Only the matrix products: they hold nearly all weights and time; the small conv2d front end
# and the normalisations stay in float, which keeps the accuracy loss down.
OP_TYPES = ["MatMul", "Gemm"]
# 7-bit weights. On x86 CPUs without VNNI (AVX2, AVX-512F) ONNX Runtime multiplies uint8
# activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate with full 8-bit
# weights: measured on such a CPU (tiny test model), CTC greedy output differed from PyTorch's
# by 38.7% of tokens with 8-bit weights and 3.9% with 7-bit ones, at the same speed (seed-size
# encoder, 1 thread, CPU time 214 vs 216 ms). The graphs must run on any CPU, so always.
REDUCE_RANGE = True


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Weights to int8 (per tensor), activations quantized on the fly; written atomically.

    The graph first goes through ONNX Runtime's quantization pre-processing (ONNX shape
    inference and graph optimisation). Its symbolic shape inference is skipped: it cannot
    reason about the conv2d subsampling's floor((T - 3) / 2) lengths and aborts.
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
