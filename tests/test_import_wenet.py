"""WeNet import: *.pt + train.yaml + units.txt + global_cmvn -> checkpoint.N.

The source state_dict is one of our own tiny models renamed into WeNet's layout:
`encoder.global_cmvn.*`, `encoder.embed.linear` (conv2d6/8), `decoder.left_decoder.*` and
`decoder.right_decoder.*` (bitransformer); or CMVN only as the global_cmvn JSON.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_fixtures import one_thread, tiny_model_config  # noqa: F401 (autouse fixture)

from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import load_model
from e2e_asr.model.importers import BaseModelImportError, import_base_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "steps"))
import import_base_model as step  # noqa: E402

IDIM = 80
UNITS = ["<blank>", "<unk>", "啊", "吧", "从", "的", "<sos/eos>"]


def our_model(conformer: bool, input_layer: str, pos: str = "abs_pos"):
    torch.manual_seed(2)
    mc = tiny_model_config(
        idim=IDIM,
        odim=len(UNITS),
        encoder_type="conformer" if conformer else "transformer",
        encoder_linear_units=24,
        decoder_linear_units=24,
        encoder_input_layer=input_layer,
        layer_norm_eps=1e-5,  # WeNet's LayerNorm eps, which the import carries over
    )
    if conformer:
        mc.update(cnn_module_kernel=5, pos_enc_layer_type=pos)
    model = build_model(mc, {}).eval()
    with torch.no_grad():  # make the position biases matter (xavier init is small)
        for name, p in model.named_parameters():
            if "pos_bias" in name or "linear_pos" in name:
                p.normal_()
    return model


def wenet_config(conformer: bool, input_layer: str, decoder: str) -> dict:
    enc = {
        "output_size": 16,
        "attention_heads": 2,
        "linear_units": 24,
        "num_blocks": 2,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.0,
        "input_layer": input_layer,
        "normalize_before": True,
        "pos_enc_layer_type": "abs_pos",
    }
    if conformer:
        enc.update(
            selfattention_layer_type="selfattn",
            activation_type="swish",
            macaron_style=True,
            use_cnn_module=True,
            cnn_module_kernel=5,
            cnn_module_norm="batch_norm",
            causal=False,
            use_dynamic_chunk=True,
        )
    dec = {"attention_heads": 2, "linear_units": 24, "num_blocks": 2, "dropout_rate": 0.1}
    if decoder == "bitransformer":
        dec["r_num_blocks"] = 1
    return {
        "encoder": "conformer" if conformer else "transformer",
        "encoder_conf": enc,
        "decoder": decoder,
        "decoder_conf": dec,
        "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "reverse_weight": 0.3},
        "input_dim": IDIM,
        "output_dim": len(UNITS),
        "cmvn_file": "data/train/global_cmvn",
        "is_json_cmvn": True,
        "dataset_conf": {"fbank_conf": {"num_mel_bins": 80, "frame_shift": 10, "dither": 0.1}},
    }


def to_wenet(sd: dict, input_layer: str, decoder: str, with_cmvn: bool) -> dict:
    out = {}
    for key, value in sd.items():
        if key.startswith("global_cmvn."):
            if with_cmvn:
                out["encoder." + key] = value
            continue
        if input_layer != "conv2d" and key.startswith("encoder.embed.out.0."):
            key = "encoder.embed.linear." + key[len("encoder.embed.out.0.") :]
        if decoder == "bitransformer" and key.startswith("decoder."):
            out["decoder.left_decoder." + key[len("decoder.") :]] = value
            if not key.startswith("decoder.decoders.1."):  # r_num_blocks = 1
                out["decoder.right_decoder." + key[len("decoder.") :]] = value + 1.0
            continue
        out[key] = value
    return out


def write_experiment(tmp: Path, model, cfg, input_layer, decoder, with_cmvn) -> tuple:
    exp = tmp / "exp" / "conformer"
    exp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = rng.normal(8.0, 2.5, size=(600, IDIM))
    stats = {
        "mean_stat": frames.sum(0).tolist(),
        "var_stat": (frames**2).sum(0).tolist(),
        "frame_num": 600,
    }
    (exp / "global_cmvn").write_text(json.dumps(stats), encoding="utf-8")
    mean = frames.sum(0) / 600
    istd = 1.0 / np.sqrt((frames**2).sum(0) / 600 - mean**2)
    model.set_cmvn(torch.tensor(mean, dtype=torch.float32), torch.tensor(istd, dtype=torch.float32))
    torch.save(to_wenet(model.state_dict(), input_layer, decoder, with_cmvn), exp / "avg_5.pt")
    (exp / "train.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    lines = [f"{u} {i}" for i, u in enumerate(UNITS)]
    (exp / "units.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return exp / "avg_5.pt"


def outputs(model, feats):
    with torch.no_grad():
        enc, lens = model.encode(feats, torch.tensor([feats.size(1)]))
        ys = torch.tensor([[len(UNITS) - 1, 2, 5, 3]])
        dec = model.decoder_logprobs(ys, torch.tensor([4]), enc, lens)
        return model.ctc_log_probs(enc), dec


@pytest.mark.parametrize(
    "conformer,input_layer,decoder,with_cmvn",
    [(True, "conv2d6", "bitransformer", True), (False, "conv2d", "transformer", False)],
)
def test_import_gives_same_log_probs(tmp_path, conformer, input_layer, decoder, with_cmvn):
    original = our_model(conformer, input_layer)
    cfg = wenet_config(conformer, input_layer, decoder)
    src = write_experiment(tmp_path, original, cfg, input_layer, decoder, with_cmvn)
    out = tmp_path / "imported"
    assert step.main([str(src), str(out), "--epoch", "40"]) == 0
    imported, payload = load_model(out / "checkpoint.40")
    assert payload["units"] == UNITS and payload["epoch"] == 40
    assert payload["feature_config"]["type"] == "fbank"
    assert payload["feature_config"]["num_mel_bins"] == 80
    feats = torch.randn(1, 101, IDIM) * 2.5 + 8.0
    (ref_ctc, ref_dec), (got_ctc, got_dec) = outputs(original, feats), outputs(imported, feats)
    assert (ref_ctc - got_ctc).abs().max().item() < 1e-5
    assert (ref_dec - got_dec).abs().max().item() < 1e-5
    rows = [r.split("\t") for r in (out / "import_report.tsv").read_text().splitlines()[1:]]
    dropped = [r for r in rows if r[0] == "dropped"]
    if decoder == "bitransformer":
        assert dropped and all(r[1].startswith("decoder.right_decoder.") for r in dropped)
        assert any(r[0] == "renamed" and r[2] == "encoder.embed.out.0.weight" for r in rows)
        assert any(r[1] == "encoder.global_cmvn.istd" for r in rows)
    else:
        assert not dropped
        assert any(r[1].endswith("global_cmvn") and r[2] == "global_cmvn.mean" for r in rows)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"encoder": "squeezeformer"}, "encoder = 'squeezeformer'"),
        (
            {"pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "selfattn"},
            "rel_pos/selfattn",
        ),
        ({"pos_enc_layer_type": "rope_pos"}, "rope_pos/selfattn"),
        ({"cnn_module_norm": "layer_norm"}, "cnn_module_norm = 'layer_norm'"),
        ({"causal": True}, "causal = True"),
        ({"static_chunk_size": 16}, "static_chunk_size = 16"),
        ({"tokenizer": "bpe"}, "tokenizer = 'bpe'"),
    ],
)
def test_unsupported_architectures_are_refused(tmp_path, change, needle):
    original = our_model(True, "conv2d")
    cfg = wenet_config(True, "conv2d", "transformer")
    if "encoder" in change or "tokenizer" in change:
        cfg.update(change)
    else:
        cfg["encoder_conf"].update(change)
    src = write_experiment(tmp_path, original, cfg, "conv2d", "transformer", True)
    with pytest.raises(BaseModelImportError, match=needle) as e:
        import_base_model(src)
    assert "train.yaml" in str(e.value)


def test_rel_pos_conformer_gives_same_log_probs(tmp_path):
    """WeNet's default Conformer: rel_pos/rel_selfattn (no rel_shift), LayerNorm eps 1e-5."""
    original = our_model(True, "conv2d", pos="wenet_rel_pos")
    cfg = wenet_config(True, "conv2d", "transformer")
    cfg["encoder_conf"].update(
        pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn"
    )
    src = write_experiment(tmp_path, original, cfg, "conv2d", "transformer", True)
    result = import_base_model(src)
    assert result.model_config["pos_enc_layer_type"] == "wenet_rel_pos"
    assert result.model_config["layer_norm_eps"] == 1e-5
    assert any(k.endswith("self_attn.pos_bias_u") for k in result.state_dict)
    out = tmp_path / "imported"
    assert step.main([str(src), str(out), "--epoch", "3"]) == 0
    imported, _ = load_model(out / "checkpoint.3")
    for t in (101, 57):
        feats = torch.randn(1, t, IDIM) * 2.5 + 8.0
        (ref_ctc, ref_dec), (got_ctc, got_dec) = outputs(original, feats), outputs(imported, feats)
        assert (ref_ctc - got_ctc).abs().max().item() < 1e-5
        assert (ref_dec - got_dec).abs().max().item() < 1e-5


def test_mismatched_decoder_norm_eps_is_refused(tmp_path):
    original = our_model(False, "conv2d")
    cfg = wenet_config(False, "conv2d", "transformer")
    cfg["decoder_conf"]["norm_eps"] = 1e-12
    src = write_experiment(tmp_path, original, cfg, "conv2d", "transformer", True)
    with pytest.raises(BaseModelImportError, match="decoder_conf.norm_eps"):
        import_base_model(src)


def test_units_that_disagree_with_output_dim_are_refused(tmp_path):
    original = our_model(False, "conv2d")
    cfg = wenet_config(False, "conv2d", "transformer")
    cfg["output_dim"] = 9
    src = write_experiment(tmp_path, original, cfg, "conv2d", "transformer", True)
    with pytest.raises(BaseModelImportError, match="output_dim 9"):
        import_base_model(src)
