"""Export package: files, fp32 parity on untraced shapes, loud failure, int8 runs and agrees."""

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from decode_fixtures import exported, tiny_model, write_checkpoint

from e2e_asr.decode.onnx_scorer import OnnxScorer, make_session
from e2e_asr.decode.search import ctc_greedy
from e2e_asr.decode.torch_scorer import TorchScorer
from e2e_asr.export import package
from e2e_asr.export.parity import ParityError, check_fp32
from e2e_asr.export.quantize import DYNAMIC, WEIGHT_ONLY
from e2e_asr.model.checkpoint import load_checkpoint, load_model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return exported(tmp_path_factory.mktemp("decode_model"))


def test_package_contents(export_dir: Path) -> None:
    names = {p.name for p in export_dir.iterdir()}
    assert {
        "model.pt",
        "decode.yaml",
        "units.txt",
        "feature.yaml",
        "metadata.json",
        "encoder.onnx",
        "decoder.onnx",
        "encoder.int8.onnx",
        "decoder.int8.onnx",
    } <= names
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert (meta["vocab_size"], meta["sos"], meta["eos"], meta["subsampling"]) == (22, 21, 21, 4)
    assert meta["feature_config"]["dim"] == 20
    assert meta["parity_fp32"]["lengths_equal"]
    assert max(meta["parity_fp32"]["max_abs_diff"].values()) <= 1e-4
    payload = load_checkpoint(export_dir / "model.pt")
    assert set(payload) == {"model", "config", "units", "feature_config"}
    assert "global_cmvn.mean" in payload["model"]  # CMVN travels inside the weights
    # decode.yaml comes from the checkpoint's decode_config
    assert "beam: 4" in (export_dir / "decode.yaml").read_text()


def _feats(lengths, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((len(lengths), max(lengths), 20)) * 3 + 8).astype(np.float32)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, np.asarray(lengths, dtype=np.int64)


@pytest.mark.parametrize("lengths", [(57,), (230, 61, 144), (99, 99, 99)])
def test_fp32_parity_on_shapes_not_exported(export_dir: Path, lengths) -> None:
    model, _ = load_model(export_dir / "model.pt")
    t = TorchScorer(model)
    o = OnnxScorer.from_files(export_dir / "encoder.onnx", export_dir / "decoder.onnx", 22)
    feats, lens = _feats(lengths)
    t_enc, t_lens, t_lp = t.encode(feats, lens)
    o_enc, o_lens, o_lp = o.encode(feats, lens)
    assert np.array_equal(t_lens, o_lens)
    for b, n in enumerate(t_lens):
        assert np.abs(t_enc.numpy()[b, :n] - o_enc[b, :n]).max() <= 1e-4
        assert np.abs(t_lp[b, :n] - o_lp[b, :n]).max() <= 1e-4
    # decoder on padded hypotheses of different lengths against the padded encoder batch
    ys = np.array([[21, 3, 4, 5, 6, 7], [21, 8, 21, 21, 21, 21], [21, 9, 9, 2, 21, 21]])[
        : len(lengths)
    ]
    ys_lens = np.array([6, 2, 4])[: len(lengths)]
    t_d = t.decoder_logprobs(ys, ys_lens, t_enc, t_lens)
    o_d = o.decoder_logprobs(ys, ys_lens, o_enc, o_lens)
    for b, n in enumerate(ys_lens):
        assert np.abs(t_d[b, :n] - o_d[b, :n]).max() <= 1e-4


def test_parity_failure_is_loud(export_dir: Path, tmp_path: Path, monkeypatch) -> None:
    other = tiny_model(seed=1)
    o = OnnxScorer.from_files(export_dir / "encoder.onnx", export_dir / "decoder.onnx", 22)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_fp32(other, o)

    # a graph that does not match the weights makes the whole export fail, nothing installed
    real_export = package.export_model

    def perturbed(model, out_dir, **kw):
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.encoder.embed.conv[0].weight.add_(0.01)
        return real_export(bad, out_dir, **kw)

    monkeypatch.setattr(package, "export_model", perturbed)
    ckpt = write_checkpoint(tmp_path / "checkpoint.1")
    with pytest.raises(ParityError):
        package.export_package(ckpt, tmp_path / "export", quantize=False, log=lambda m: None)
    assert not (tmp_path / "export").exists()
    assert (tmp_path / "export.failed" / "encoder.onnx").is_file()


def test_int8_runs_on_odd_shapes_and_mostly_agrees(export_dir: Path) -> None:
    model, _ = load_model(export_dir / "model.pt")
    q = OnnxScorer.from_files(
        export_dir / "encoder.int8.onnx", export_dir / "decoder.int8.onnx", 22
    )
    feats, lens = _feats((333, 120, 45), seed=5)
    _, t_lens, t_lp = TorchScorer(model).encode(feats, lens)
    _, q_lens, q_lp = q.encode(feats, lens)
    assert np.array_equal(t_lens, q_lens)
    t_hyp, q_hyp = ctc_greedy(t_lp, t_lens), ctc_greedy(q_lp, q_lens)
    # frame-level argmax agreement on valid frames
    agree = np.mean(
        np.concatenate(
            [t_lp[b, :n].argmax(-1) == q_lp[b, :n].argmax(-1) for b, n in enumerate(t_lens)]
        )
    )
    assert agree >= 0.9
    assert sum(len(h) for h in q_hyp) > 0 and len(t_hyp) == 3
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["parity_int8"]["greedy_token_error"] < 10.0


# ops that quantize activations (ONNX Runtime's dynamic, static QDQ and QOperator graphs)
ACTIVATION_QUANT_OPS = {
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
}


def test_int8_encoder_is_weight_only_and_recorded(export_dir: Path) -> None:
    """The int8 encoder (also sherpa-onnx's model.int8.onnx) stores int8 weights and computes
    in float; the decoders are dynamic; metadata.json says which is which."""
    fp32 = onnx.load(str(export_dir / "encoder.onnx"))
    fp32_inits = {i.name for i in fp32.graph.initializer}
    weights = {
        n.input[1]
        for n in fp32.graph.node
        if n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] in fp32_inits
    }
    q = onnx.load(str(export_dir / "encoder.int8.onnx"))
    assert not {n.op_type for n in q.graph.node} & ACTIVATION_QUANT_OPS
    int8 = {i.name for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert int8 == {f"{w}.int8" for w in weights} and len(weights) >= 10
    dec = onnx.load(str(export_dir / "decoder.int8.onnx"))
    assert "DynamicQuantizeLinear" in {n.op_type for n in dec.graph.node}
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["int8_quantization"] == {
        "encoder": WEIGHT_ONLY,
        "decoder": DYNAMIC,
        "decoder_memory": DYNAMIC,
        "decoder_step": DYNAMIC,
    }
    # (the tiny model's file is mostly its positional table, which stays float)
    size = (export_dir / "encoder.int8.onnx").stat().st_size
    assert size < (export_dir / "encoder.onnx").stat().st_size


def test_int8_encoder_moves_with_its_input_like_fp32(export_dir: Path) -> None:
    """A tiny change of the features (1e-4, far below what two fbank implementations differ
    by) moves the int8 encoder's log-probs no more than the fp32 encoder's. Any activation
    quantization fails this: dynamic int8 moves them by 0.18 where fp32 moves 0.0008 (its
    roundings shift), which is what made sherpa-onnx's int8 hypotheses differ from ours."""
    feats, lens = _feats((333, 120, 45), seed=5)
    moved = {}
    for name in ("encoder.onnx", "encoder.int8.onnx"):
        s = make_session(export_dir / name, 1)
        a, b = (
            s.run(["ctc_logp"], {"feats": x, "feat_lens": lens})[0]
            for x in (feats, feats + np.float32(1e-4))
        )
        moved[name] = max(float(np.abs(a[i, :n] - b[i, :n]).max()) for i, n in enumerate(lens))
    assert moved["encoder.int8.onnx"] <= 2 * moved["encoder.onnx"] + 1e-5, moved


def test_no_quantize_writes_no_int8(tmp_path: Path) -> None:
    msgs: list[str] = []
    ckpt = write_checkpoint(tmp_path / "checkpoint.1")
    meta = package.export_package(ckpt, tmp_path / "export", quantize=False, log=msgs.append)
    assert meta["int8_quantization"] is None and meta["parity_int8"] is None
    assert not list((tmp_path / "export").rglob("*.int8.onnx"))
    assert not [m for m in msgs if "int8" in m]


def test_decoder_broadcast_equals_repeated_rows(export_dir: Path) -> None:
    o = OnnxScorer.from_files(export_dir / "encoder.onnx", export_dir / "decoder.onnx", 22)
    assert o.broadcast  # this export names the encoder batch separately
    feats, lens = _feats((150,))
    enc, enc_lens, _ = o.encode(feats, lens)
    ys = np.array([[21, 3, 4, 5], [21, 6, 21, 21], [21, 7, 8, 21]])
    ys_lens = np.array([4, 2, 3])
    one = o.decoder_logprobs(ys, ys_lens, enc, enc_lens)
    rep = o.decoder_logprobs(ys, ys_lens, np.repeat(enc, 3, 0), np.repeat(enc_lens, 3))
    o.broadcast = False  # the path for graphs exported without the separate name
    fallback = o.decoder_logprobs(ys, ys_lens, enc, enc_lens)
    for b, n in enumerate(ys_lens):
        assert np.abs(one[b, :n] - rep[b, :n]).max() <= 1e-5
        assert np.array_equal(fallback[b, :n], rep[b, :n])
