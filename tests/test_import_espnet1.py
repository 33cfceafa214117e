"""ESPnet1 import: model.acc.best / snapshot.ep.N + model.json + cmvn.ark -> checkpoint.N.

The source files are built from one of our own tiny models (ESPnet1 key names are ours),
without CMVN inside: ESPnet1 normalised features in the data loader with cmvn.ark. The
imported model must give the same CTC log-probabilities on raw features as the original on
features normalised with cmvn.ark.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import one_thread, tiny_model_config  # noqa: F401 (autouse fixture)

from e2e_asr.data.cmvn import write_cmvn
from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import load_model
from e2e_asr.model.importers import BaseModelImportError, import_base_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "steps"))
import import_base_model as step  # noqa: E402

IDIM, ODIM = 40, 9
CHARS = ["<blank>", "<unk>", "你", "好", "世", "界", "中", "国", "<eos>"]


def espnet1_args(conformer: bool, **over) -> dict:
    args = {
        "adim": 16,
        "aheads": 2,
        "eunits": 24,
        "elayers": 2,
        "dunits": 24,
        "dlayers": 1,
        "transformer_input_layer": "conv2d",
        "dropout_rate": 0.1,
        "transformer_attn_dropout_rate": None,
        "mtlalpha": 0.3,
        "lsm_weight": 0.1,
        "transformer_length_normalized_loss": False,
        "char_list": CHARS,
        "model_module": "espnet.nets.pytorch_backend.e2e_asr_transformer:E2E",
    }
    if conformer:
        args.update(
            model_module="espnet.nets.pytorch_backend.e2e_asr_conformer:E2E",
            rel_pos_type="latest",
            transformer_encoder_pos_enc_layer_type="rel_pos",
            transformer_encoder_selfattn_layer_type="rel_selfattn",
            transformer_encoder_activation_type="swish",
            macaron_style=True,
            use_cnn_module=True,
            cnn_module_kernel=5,
        )
    args.update(over)
    return args


def our_model(conformer: bool, seed: int = 0, pos: str = "rel_pos"):
    torch.manual_seed(seed)
    mc = tiny_model_config(
        idim=IDIM,
        odim=ODIM,
        encoder_type="conformer" if conformer else "transformer",
        encoder_linear_units=24,
        decoder_linear_units=24,
        decoder_num_block=1,
    )
    if conformer:
        mc.update(cnn_module_kernel=5, pos_enc_layer_type=pos)
    model = build_model(mc, {}).eval()
    if conformer:  # non-trivial BatchNorm statistics and position biases, as if trained
        for layer in model.encoder.encoders:
            layer.conv_module.norm.running_mean.normal_()
            layer.conv_module.norm.running_var.uniform_(0.5, 2.0)
            layer.self_attn.pos_bias_u.data.normal_()
            layer.self_attn.pos_bias_v.data.normal_()
    return model


def write_recipe(tmp: Path, model, args: dict, weights_name: str, snapshot: bool):
    exp = tmp / "exp" / "results"
    exp.mkdir(parents=True)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("global_cmvn.")}
    obj = sd
    if snapshot:  # ESPnet1 torch_snapshot: trainer state (numpy), model, optimizer
        obj = {
            "trainer": {"updater/iteration": np.array(120), "stop_trigger/epoch": np.float64(7)},
            "model": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1.0, "params": [0, 1]}]},
        }
    torch.save(obj, exp / weights_name)
    (exp / "model.json").write_text(json.dumps([IDIM, ODIM, args]), encoding="utf-8")
    rng = np.random.default_rng(0)
    frames = rng.normal(3.0, 2.0, size=(500, IDIM))
    stats = np.zeros((2, IDIM + 1))
    stats[0, :-1], stats[1, :-1], stats[0, -1] = frames.sum(0), (frames**2).sum(0), 500
    write_cmvn(tmp / "cmvn.ark", stats)
    mean = stats[0, :-1] / 500
    istd = 1.0 / np.sqrt(stats[1, :-1] / 500 - mean**2)
    return (
        exp / weights_name,
        torch.tensor(mean, dtype=torch.float32),
        torch.tensor(istd, dtype=torch.float32),
    )


def ctc_logp(model, feats):
    with torch.no_grad():
        enc, _ = model.encode(feats, torch.tensor([feats.size(1)]))
        return model.ctc_log_probs(enc)


@pytest.mark.parametrize(
    "conformer,weights,snapshot",
    [(False, "model.acc.best", False), (True, "snapshot.ep.7", True)],
)
def test_import_gives_same_ctc_log_probs(tmp_path, capsys, conformer, weights, snapshot):
    original = our_model(conformer)
    src, mean, istd = write_recipe(tmp_path, original, espnet1_args(conformer), weights, snapshot)
    out = tmp_path / "imported"
    rc = step.main([str(src), str(out), "--cmvn", str(tmp_path / "cmvn.ark")])
    assert rc == 0
    epoch = 7 if snapshot else 0
    imported, payload = load_model(out / f"checkpoint.{epoch}")
    assert payload["epoch"] == epoch and payload["step"] == 0
    assert payload["units"] == CHARS[:-1] + ["<sos/eos>"]
    assert payload["feature_config"]["type"] == "mfcc_hires"
    assert payload["feature_config"]["dim"] == IDIM
    assert payload["config"]["model_config"]["encoder_type"] == (
        "conformer" if conformer else "transformer"
    )
    assert {"model_config", "criterion_config", "decode_config"} <= set(payload["config"])
    feats = torch.randn(1, 83, IDIM) * 2.0 + 3.0
    ref = ctc_logp(original, (feats - mean) * istd)  # ESPnet1: CMVN in the data loader
    got = ctc_logp(imported, feats)
    diff = (ref - got).abs().max().item()
    assert diff < 1e-5, diff
    # every source key reported once, plus the two CMVN buffers and the units
    report = (out / "import_report.tsv").read_text(encoding="utf-8").splitlines()
    n_src = sum(1 for k in original.state_dict() if not k.startswith("global_cmvn."))
    assert len(report) == 1 + n_src + 2 + 1
    assert sum(1 for r in report if r.startswith("converted\t") and "global_cmvn" in r) == 2
    assert "mapped" in capsys.readouterr().out


def test_missing_cmvn_warns_and_identity(tmp_path, capsys):
    original = our_model(False)
    src, _, _ = write_recipe(tmp_path, original, espnet1_args(False), "model.acc.best", False)
    result = import_base_model(src)
    assert result.fmt == "espnet1"
    assert any("cmvn.ark" in w for w in result.warnings)
    assert torch.equal(result.state_dict["global_cmvn.istd"], torch.ones(IDIM))


@pytest.mark.parametrize(
    "over",
    [
        {"rel_pos_type": None},
        {
            "rel_pos_type": "legacy",
            "transformer_encoder_pos_enc_layer_type": "legacy_rel_pos",
            "transformer_encoder_selfattn_layer_type": "legacy_rel_selfattn",
        },
    ],
    ids=["rel_pos-unset-type", "legacy_rel_pos"],
)
def test_legacy_rel_pos_conformer_gives_same_ctc_log_probs(tmp_path, over):
    """ESPnet1 runs rel_pos as legacy_rel_pos unless rel_pos_type is latest."""
    original = our_model(True, pos="legacy_rel_pos")
    args = espnet1_args(True, **over)
    src, mean, istd = write_recipe(tmp_path, original, args, "model.acc.best", False)
    result = import_base_model(src, cmvn=tmp_path / "cmvn.ark")
    assert result.model_config["pos_enc_layer_type"] == "legacy_rel_pos"
    assert any("padded length" in w for w in result.warnings)
    imported = build_model(result.model_config, result.criterion_config).eval()
    imported.load_state_dict(result.state_dict)
    for t in (83, 61):
        feats = torch.randn(1, t, IDIM) * 2.0 + 3.0
        ref = ctc_logp(original, (feats - mean) * istd)
        diff = (ref - ctc_logp(imported, feats)).abs().max().item()
        assert diff < 1e-5, diff


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"transformer_encoder_pos_enc_layer_type": "legacy_rel_pos"}, "'legacy_rel_pos/"),
        ({"model_module": "espnet.nets.pytorch_backend.e2e_asr:E2E"}, "model_module = "),
        ({"transformer_input_layer": "vgg2l"}, "transformer_input_layer = 'vgg2l'"),
        ({"zero_triu": True}, "zero_triu = True"),
    ],
)
def test_unsupported_architectures_are_refused(tmp_path, override, needle):
    original = our_model(True)
    args = espnet1_args(True, **override)
    src, _, _ = write_recipe(tmp_path, original, args, "model.acc.best", False)
    with pytest.raises(BaseModelImportError, match=needle) as e:
        import_base_model(src)
    assert "model.json" in str(e.value)


def test_weights_that_disagree_with_model_json_name_the_key(tmp_path):
    original = our_model(False)
    args = espnet1_args(False, eunits=32)
    src, _, _ = write_recipe(tmp_path, original, args, "model.acc.best", False)
    with pytest.raises(BaseModelImportError, match=r"feed_forward\.w_1\.weight"):
        import_base_model(src)


def test_snapshot_with_arbitrary_objects_is_refused_not_unpickled(tmp_path):
    original = our_model(False)
    src, _, _ = write_recipe(tmp_path, original, espnet1_args(False), "snapshot.ep.3", False)
    sd = torch.load(src, weights_only=True)
    torch.save({"model": sd, "args": argparse.Namespace(x=1)}, src)
    with pytest.raises(BaseModelImportError, match="Namespace") as e:
        import_base_model(src)
    assert str(src) in str(e.value)


def test_pitch_input_is_refused(tmp_path):
    original = our_model(False)
    src, _, _ = write_recipe(tmp_path, original, espnet1_args(False), "model.acc.best", False)
    (src.parent / "model.json").write_text(json.dumps([83, ODIM, espnet1_args(False)]))
    with pytest.raises(BaseModelImportError, match="computes no pitch features"):
        import_base_model(src)


def test_ctc_only_source_gets_a_fresh_decoder(tmp_path):
    original = our_model(False)
    src, mean, istd = write_recipe(
        tmp_path, original, espnet1_args(False, mtlalpha=1.0), "model.acc.best", False
    )
    sd = torch.load(src, weights_only=True)
    torch.save({k: v for k, v in sd.items() if not k.startswith("decoder.")}, src)
    result = import_base_model(src, cmvn=tmp_path / "cmvn.ark")
    added = [r for r in result.rows if r.action == "added"]
    assert added and all(r.target.startswith("decoder.") for r in added)
    assert result.criterion_config["rate"] == 1.0
    feats = torch.randn(1, 50, IDIM) * 2.0 + 3.0
    diff = (ctc_logp(original, (feats - mean) * istd) - ctc_logp(result.build(), feats)).abs()
    assert diff.max().item() < 1e-5
