"""ESPnet2 import: *.pth + config.yaml (token_list, encoder_conf, normalize) -> checkpoint.N.

The source state_dict is one of our own tiny models in ESPnet2's layout: CMVN as the
`normalize` GlobalMVN buffers (mean, std) or only as feats_stats.npz (count/sum/sum_square).
"""

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
TOKENS = ["<blank>", "<unk>", "你", "好", "世", "界", "<sos/eos>"]


def our_model(conformer: bool, pos: str = "rel_pos"):
    torch.manual_seed(1)
    mc = tiny_model_config(
        idim=IDIM,
        odim=len(TOKENS),
        encoder_type="conformer" if conformer else "transformer",
        encoder_linear_units=24,
        decoder_linear_units=24,
        decoder_num_block=1,
        encoder_input_layer="conv2d6" if conformer else "conv2d",
    )
    if conformer:
        mc.update(cnn_module_kernel=5, macaron_style=False, pos_enc_layer_type=pos)
    model = build_model(mc, {}).eval()
    with torch.no_grad():  # make the position terms matter (xavier init is small)
        for name, p in model.named_parameters():
            if "pos_bias" in name:
                p.normal_()
    return model


def espnet2_config(conformer: bool, stats_file: str) -> dict:
    enc = {
        "output_size": 16,
        "attention_heads": 2,
        "linear_units": 24,
        "num_blocks": 2,
        "dropout_rate": 0.1,
        "input_layer": "conv2d6" if conformer else "conv2d",
        "normalize_before": True,
    }
    if conformer:  # macaron_style is False by ESPnet2's default
        enc.update(
            rel_pos_type="latest",
            pos_enc_layer_type="rel_pos",
            selfattention_layer_type="rel_selfattn",
            activation_type="swish",
            use_cnn_module=True,
            cnn_module_kernel=5,
        )
    return {
        "token_list": TOKENS,
        "input_size": IDIM,
        "frontend": None,
        "specaug": "specaug",
        "normalize": "global_mvn",
        "normalize_conf": {"stats_file": stats_file},
        "model": "espnet",
        "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False},
        "encoder": "conformer" if conformer else "transformer",
        "encoder_conf": enc,
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 24, "num_blocks": 1},
    }


def write_experiment(tmp: Path, model, cfg: dict, with_buffers: bool) -> tuple[Path, tuple]:
    exp = tmp / "exp" / "asr_train"
    exp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = rng.normal(-5.0, 3.0, size=(700, IDIM))
    count, total, square = 700, frames.sum(0), (frames**2).sum(0)
    stats_dir = tmp / "exp" / "asr_stats" / "train"
    stats_dir.mkdir(parents=True)
    np.savez(stats_dir / "feats_stats.npz", count=count, sum=total, sum_square=square)
    # GlobalMVN's own arithmetic: mean = sum/count, std = sqrt(max(E[x^2] - mean^2, eps))
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean**2, 1e-20))
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("global_cmvn.")}
    if with_buffers:
        sd = {
            "normalize.mean": torch.from_numpy(mean),
            "normalize.std": torch.from_numpy(std),
            **sd,
        }
    torch.save(sd, exp / "valid.acc.ave_10best.pth")
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    mean_t = torch.tensor(mean, dtype=torch.float32)
    istd_t = 1.0 / torch.tensor(std, dtype=torch.float32)
    return exp / "valid.acc.ave_10best.pth", (mean_t, istd_t)


def outputs(model, feats):
    with torch.no_grad():
        enc, lens = model.encode(feats, torch.tensor([feats.size(1)]))
        ys = torch.tensor([[len(TOKENS) - 1, 2, 3, 4]])
        dec = model.decoder_logprobs(ys, torch.tensor([4]), enc, lens)
        return model.ctc_log_probs(enc), dec


@pytest.mark.parametrize("conformer,with_buffers", [(True, True), (False, False)])
def test_import_gives_same_log_probs(tmp_path, conformer, with_buffers):
    original = our_model(conformer)
    cfg = espnet2_config(conformer, "exp/asr_stats/train/feats_stats.npz")
    src, (mean, istd) = write_experiment(tmp_path, original, cfg, with_buffers)
    out = tmp_path / "imported"
    assert step.main([str(src), str(out), "--quiet"]) == 0
    imported, payload = load_model(out / "checkpoint.0")
    assert payload["units"] == TOKENS
    assert payload["feature_config"]["type"] == "fbank" and payload["feature_config"]["dim"] == 80
    assert payload["config"]["criterion_config"]["rate"] == 0.3
    original.set_cmvn(mean, istd)  # the original with GlobalMVN in front
    feats = torch.randn(1, 97, IDIM) * 3.0 - 5.0
    (ref_ctc, ref_dec), (got_ctc, got_dec) = outputs(original, feats), outputs(imported, feats)
    assert (ref_ctc - got_ctc).abs().max().item() < 1e-5
    assert (ref_dec - got_dec).abs().max().item() < 1e-5
    report = (out / "import_report.tsv").read_text(encoding="utf-8")
    source = "normalize.std" if with_buffers else "feats_stats.npz"
    assert any(
        line.startswith("converted") and source in line and "global_cmvn.istd" in line
        for line in report.splitlines()
    )


def test_frontend_keys_dropped_and_reported(tmp_path):
    original = our_model(False)
    cfg = espnet2_config(False, "missing.npz")
    cfg.update(frontend="default", frontend_conf={"n_fft": 512, "hop_length": 160})
    del cfg["input_size"]
    src, _ = write_experiment(tmp_path, original, cfg, True)
    sd = torch.load(src, weights_only=True)
    sd["frontend.logmel.melmat"] = torch.zeros(257, 80)
    torch.save(sd, src)
    result = import_base_model(src)
    dropped = [r for r in result.rows if r.action == "dropped"]
    assert [r.source for r in dropped] == ["frontend.logmel.melmat"]
    assert any("STFT log-mel" in w for w in result.warnings)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"encoder": "branchformer"}, "encoder = 'branchformer'"),
        (
            {"encoder_conf": {"pos_enc_layer_type": "legacy_rel_pos"}},
            "'legacy_rel_pos/rel_selfattn/latest'",
        ),
        ({"encoder_conf": {"zero_triu": True}}, "zero_triu = True"),
        ({"normalize": "utterance_mvn"}, "normalize = 'utterance_mvn'"),
        ({"decoder": "rnn"}, "decoder = 'rnn'"),
        ({"token_type": "bpe"}, "token_type = 'bpe'"),
    ],
)
def test_unsupported_architectures_are_refused(tmp_path, change, needle):
    original = our_model(True)
    cfg = espnet2_config(True, "x.npz")
    for key, value in change.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    src, _ = write_experiment(tmp_path, original, cfg, True)
    with pytest.raises(BaseModelImportError, match=needle) as e:
        import_base_model(src)
    assert "config.yaml" in str(e.value)


@pytest.mark.parametrize("explicit", [False, True], ids=["default-rel_pos_type", "legacy"])
def test_legacy_rel_pos_conformer_gives_same_log_probs(tmp_path, explicit):
    """ESPnet2's Conformer default, rel_pos_type legacy: LegacyRelPosition* classes."""
    original = our_model(True, pos="legacy_rel_pos")
    cfg = espnet2_config(True, "exp/asr_stats/train/feats_stats.npz")
    del cfg["encoder_conf"]["rel_pos_type"]
    if explicit:
        cfg["encoder_conf"].update(
            rel_pos_type="legacy",
            pos_enc_layer_type="legacy_rel_pos",
            selfattention_layer_type="legacy_rel_selfattn",
        )
    src, (mean, istd) = write_experiment(tmp_path, original, cfg, True)
    out = tmp_path / "imported"
    assert step.main([str(src), str(out), "--quiet"]) == 0
    imported, payload = load_model(out / "checkpoint.0")
    assert payload["config"]["model_config"]["pos_enc_layer_type"] == "legacy_rel_pos"
    original.set_cmvn(mean, istd)
    for t in (97, 61):
        feats = torch.randn(1, t, IDIM) * 3.0 - 5.0
        (ref_ctc, ref_dec), (got_ctc, got_dec) = outputs(original, feats), outputs(imported, feats)
        assert (ref_ctc - got_ctc).abs().max().item() < 1e-5
        assert (ref_dec - got_dec).abs().max().item() < 1e-5


def test_missing_stats_file_is_named(tmp_path):
    original = our_model(False)
    cfg = espnet2_config(False, "exp/asr_stats/elsewhere/feats_stats.npz")
    src, _ = write_experiment(tmp_path, original, cfg, False)
    (tmp_path / "exp" / "asr_stats" / "train" / "feats_stats.npz").unlink()
    with pytest.raises(BaseModelImportError, match="elsewhere/feats_stats.npz"):
        import_base_model(src)


def test_training_checkpoint_with_model_entry(tmp_path):
    """ESPnet2's resumable checkpoint.pth keeps the weights under "model"."""
    original = our_model(False)
    src, _ = write_experiment(tmp_path, original, espnet2_config(False, "x.npz"), True)
    sd = torch.load(src, weights_only=True)
    resume = src.parent / "checkpoint.pth"
    torch.save({"model": sd, "optimizers": [{"state": {}, "param_groups": []}]}, resume)
    result = import_base_model(resume)
    assert all(
        torch.equal(result.state_dict[k], v) for k, v in sd.items() if k in result.state_dict
    )
    assert result.counts()["converted"] == 3  # mean, istd, units


def test_token_list_without_unk_at_1_is_refused(tmp_path):
    cfg = espnet2_config(False, "x.npz")
    cfg["token_list"] = ["<blank>", "你", "<unk>", "好", "世", "界", "<sos/eos>"]
    src, _ = write_experiment(tmp_path, our_model(False), cfg, True)
    with pytest.raises(BaseModelImportError, match="token_list: must start with <blank> <unk>"):
        import_base_model(src)
