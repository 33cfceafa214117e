"""Optional ``torch.compile`` of the repeated blocks (``train_config.compile: true``).

Only the encoder and decoder layers are compiled, each with the same code, so the compiler
works on one encoder block and one decoder block and every other layer reuses the result
(compiling the whole model unrolls all blocks and takes many minutes on a small CPU). Fusing
the element-wise work around the matmuls (dropout masks, residual adds, layer norms) is what
the compiler buys on CPU. Shapes are marked dynamic so that each new batch length does not
trigger a recompilation. Module names, and so state_dict keys, are unchanged.
"""

from __future__ import annotations

from torch import nn


def compile_blocks(model: nn.Module) -> int:
    """Compile ``encoder.encoders[*]`` and ``decoder.decoders[*]`` in place; returns the count."""
    n = 0
    for path in ("encoder.encoders", "decoder.decoders"):
        blocks = model.get_submodule(path)
        for layer in blocks:
            layer.compile(dynamic=True)
            n += 1
    if n == 0:
        raise ValueError("train_config.compile: the model has no encoder/decoder blocks")
    return n
