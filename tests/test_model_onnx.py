"""Export-friendliness: the encoder/CTC/decoder trace to ONNX with dynamic batch and time,
and the graph gives PyTorch's numbers on shapes other than the export shape."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from model_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    assert_encoder_onnx_parity,
    one_thread,
    tiny_model_config,
)

from e2e_asr.export.onnx_export import DecoderGraph
from e2e_asr.model import build_model

# The classic exporter is deprecated upstream but is the one export/ uses (dynamo=False).
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore:Constant folding:UserWarning"
)


def tiny(**kw):
    mc = tiny_model_config(**kw)
    torch.manual_seed(0)
    model = build_model(mc, {"rate": 0.3})
    model.set_cmvn(torch.randn(20), torch.rand(20) + 0.5)
    return model.eval()


def export(module, args, names, outputs, dynamic, path):
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=names,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # tiny graphs; a second thread only waits on a busy box
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "kw",
    [{}, {"encoder_type": "conformer", "cnn_module_kernel": 5}],
    ids=["transformer", "conformer"],
)
def test_encoder_onnx_parity_at_other_lengths(tmp_path, kw):
    assert_encoder_onnx_parity(tiny(**kw), tmp_path / "enc.onnx")


def test_decoder_onnx_parity_at_other_lengths(tmp_path):
    model = tiny()
    wrapper = DecoderGraph(model).eval()
    enc, enc_lens = model.encode(torch.randn(2, 64, 20), torch.tensor([64, 50]))
    sess = export(
        wrapper,
        (torch.tensor([[9, 1, 2], [9, 3, 0]]), torch.tensor([3, 2]), enc.detach(), enc_lens),
        ["ys_in", "ys_in_lens", "enc", "enc_lens"],
        ["logp"],
        {
            "ys_in": {0: "B", 1: "L"},
            "ys_in_lens": {0: "B"},
            "enc": {0: "B", 1: "T"},
            "enc_lens": {0: "B"},
            "logp": {0: "B", 1: "L"},
        },
        tmp_path / "dec.onnx",
    )
    with torch.no_grad():
        enc, enc_lens = model.encode(torch.randn(4, 90, 20), torch.tensor([90, 80, 70, 45]))
    ys_in = torch.randint(0, 10, (4, 6))
    ys_lens = torch.tensor([6, 5, 2, 1])
    with torch.no_grad():
        ref = wrapper(ys_in, ys_lens, enc, enc_lens)
    (got,) = sess.run(
        None,
        {
            "ys_in": ys_in.numpy(),
            "ys_in_lens": ys_lens.numpy(),
            "enc": enc.numpy(),
            "enc_lens": enc_lens.numpy(),
        },
    )
    assert got.shape == (4, 6, 10)
    assert np.abs(got - ref.numpy()).max() < 1e-4
