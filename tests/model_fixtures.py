"""The tiny model config the tests build their models from; each test overrides what it needs.

`one_thread` is an autouse fixture: a test module that imports it runs each of its tests on
one torch thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch


def tiny_model_config(**overrides: Any) -> dict[str, Any]:
    """A 2-block transformer, 16-dim attention with 2 heads, FF 32, 20-dim input, 10 units.

    Overrides replace the values in place (key order kept) or are added at the end.
    """
    mc: dict[str, Any] = dict(
        idim=20,
        odim=10,
        encoder_attention_dim=16,
        encoder_attention_heads=2,
        encoder_linear_units=32,
        encoder_num_blocks=2,
        decoder_attention_dim=16,
        decoder_attention_heads=2,
        decoder_linear_units=32,
        decoder_num_block=2,
    )
    mc.update(overrides)
    return mc


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: extra threads only contend on a shared machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_encoder_onnx_parity(model: torch.nn.Module, path: Any, idim: int = 20) -> None:
    """Export the encoder+CTC graph at (2, 64) and check ONNX Runtime against PyTorch at
    other batch sizes and lengths (the traced shape must not be baked into the graph)."""
    from e2e_asr.export.onnx_export import EncoderGraph

    wrapper = EncoderGraph(model).eval()
    torch.onnx.export(
        wrapper,
        (torch.randn(2, 64, idim), torch.tensor([64, 50])),
        str(path),
        input_names=["feats", "feat_lens"],
        output_names=["enc", "enc_lens", "ctc_logp"],
        dynamic_axes={
            "feats": {0: "B", 1: "T"},
            "feat_lens": {0: "B"},
            "enc": {0: "B", 1: "T4"},
            "enc_lens": {0: "B"},
            "ctc_logp": {0: "B", 1: "T4"},
        },
        opset_version=17,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for b, t in ((1, 137), (3, 29)):
        feats = torch.randn(b, t, idim)
        lens = torch.tensor([t] + [t - 5] * (b - 1))
        with torch.no_grad():
            ref = wrapper(feats, lens)
        got = sess.run(None, {"feats": feats.numpy(), "feat_lens": lens.numpy()})
        assert got[0].shape == tuple(ref[0].shape)
        assert np.array_equal(got[1], ref[1].numpy())
        assert np.abs(got[0] - ref[0].numpy()).max() < 1e-4
        assert np.abs(got[2] - ref[2].numpy()).max() < 1e-4
