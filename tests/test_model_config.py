"""Config parsing: seed keys accepted, unknown keys named, inconsistent values refused."""

from pathlib import Path

import pytest
import yaml

from e2e_asr.model import CriterionConfig, ModelConfig, build_model

SEED = Path(__file__).resolve().parent / "data" / "seed_finetune.yaml"  # the seed, as is
SMALL = dict(
    encoder_attention_dim=32,
    encoder_attention_heads=4,
    encoder_linear_units=64,
    encoder_num_blocks=2,
    decoder_attention_dim=32,
    decoder_attention_heads=4,
    decoder_linear_units=64,
    decoder_num_block=2,
    odim=12,
)


@pytest.fixture(scope="module")
def seed() -> dict:
    return yaml.safe_load(SEED.read_text(encoding="utf-8"))


def test_seed_model_config_builds_with_small_dims(seed):
    mc = dict(seed["model_config"], **SMALL)
    cc = dict(seed["criterion_config"], size=12)
    model = build_model(mc, cc)
    assert model.config.encoder_type == "transformer"  # the eteh class name maps here
    assert model.config.name == "eteh.models.pytorch_backend.model.e2e:E2E_Transformer_CTC"
    assert model.ctc_weight == pytest.approx(0.3)
    assert model.criterion_att.confidence == pytest.approx(0.9)
    assert (model.sos, model.eos, model.blank, model.ignore_id) == (11, 11, 0, -1)
    assert model.subsampling_rate == 4 and model.idim == 40 and model.odim == 12


def test_seed_full_size_config_parses(seed):
    cfg = ModelConfig.from_dict(seed["model_config"])
    assert (cfg.encoder_num_blocks, cfg.encoder_attention_dim, cfg.odim) == (14, 320, 5720)
    assert CriterionConfig.from_dict(seed["criterion_config"]).size == 5720


def test_unknown_model_key_is_named():
    with pytest.raises(ValueError, match=r"'encoder_num_block'.*model_config"):
        ModelConfig.from_dict({"idim": 40, "odim": 10, "encoder_num_block": 3})


def test_unknown_criterion_key_is_named():
    with pytest.raises(ValueError, match=r"'smothing'.*criterion_config"):
        CriterionConfig.from_dict({"smothing": 0.1})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"encoder_input_layer": "conv1d"}, "encoder_input_layer"),
        ({"encoder_type": "rnn"}, "encoder_type"),
        ({"name": "eteh.models.Other"}, "name"),
        ({"encoder_attention_heads": 5}, "not divisible"),
        ({"pos_enc_layer_type": "rel_pos"}, "rel_pos needs encoder_type conformer"),
        (
            {"encoder_num_blocks": "14"},
            r"'model_config.encoder_num_blocks' must be an integer, got '14'",
        ),
        ({"encoder_dropout_rate": "0.1"}, "encoder_dropout_rate"),
        ({"macaron_style": 1}, "macaron_style"),
        ({"encoder_num_blocks": True}, "encoder_num_blocks"),
    ],
)
def test_bad_model_values_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({"idim": 40, "odim": 10, **override})


def test_integer_where_float_expected_is_fine():
    cfg = ModelConfig.from_dict({"idim": 40, "odim": 10, "encoder_attention_dropout_rate": 0})
    assert cfg.encoder_attention_dropout_rate == 0
    with pytest.raises(ValueError, match="criterion_config.rate"):
        CriterionConfig.from_dict({"rate": "0.3"})


def test_size_must_match_odim():
    with pytest.raises(ValueError, match="criterion_config.size"):
        build_model({"idim": 40, **SMALL}, {"size": 13})


def test_conformer_defaults_to_rel_pos():
    cfg = ModelConfig.from_dict({"idim": 40, "odim": 10, "encoder_type": "conformer"})
    assert cfg.pos_enc_layer_type == "rel_pos"
    assert cfg.to_dict()["encoder_type"] == "conformer"
