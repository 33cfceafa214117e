"""The training config loader: the seed file, both layouts, defaults, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e_asr.train.config import ConfigError, apply_overrides, load_train_config

REPO = Path(__file__).resolve().parents[1]
# the seed system's ce_espnet_baseline_fintune.yaml, byte for byte: it must load as is
SEED = REPO / "tests" / "data" / "seed_finetune.yaml"


def _seed_raw() -> dict:
    return yaml.safe_load(SEED.read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


def test_seed_file_loads_as_written() -> None:
    cfg = load_train_config(SEED)
    assert cfg["jconfig"]["batch_size"] == 16
    assert cfg["jconfig"]["ilen_min"] == 17
    assert [t["type"] for t in cfg["trans_config"]] == ["time_warp", "freq_mask", "time_mask"]
    assert cfg["trans_config"][0]["mode"] == "PIL"
    assert cfg["opti_config"]["name"] == "noam"
    assert cfg["opti_config"]["warm_step"] == 25000
    assert cfg["opti_config"]["betas"] == [0.9, 0.98]
    assert cfg["criterion_config"]["rate"] == 0.3
    assert cfg["model_config"]["encoder_num_blocks"] == 14
    assert cfg["model_config"]["odim"] == 5720
    assert cfg["train_config"]["accum_grad"] == 2
    assert cfg["train_config"]["amp"] == "off"  # the seed's False
    assert cfg["decode_config"]["ctc_beam"] == 15
    # the seed's valid_config typo 'batch_frame_in' is the same key as batch_frames_in
    assert "batch_frame_in" not in cfg["valid_config"]["jconfig"]
    assert cfg["valid_config"]["jconfig"]["batch_frames_in"] == 0
    assert cfg["data_config"] == {"data_type": "json", "load": False}


def test_flat_layout_equals_nested(tmp_path: Path) -> None:
    raw = _seed_raw()
    set_cfg = raw.pop("set_config")
    raw.update(set_cfg)  # jconfig, trans_config, data_type, load at the top level
    assert load_train_config(_write(tmp_path, raw)) == load_train_config(SEED)


def test_conf_finetune_is_the_seed_config_but_what_kept_finetuning_from_learning() -> None:
    ours = load_train_config(REPO / "conf" / "finetune.yaml")
    seed = load_train_config(SEED)
    # the fine-tuning schedule (issue 11): warmup to half the base's peak, from update 0
    assert ours["opti_config"]["name"] == "warmup_decay" and ours["opti_config"]["lr"] == "auto"
    assert ours["train_config"]["noam_restart"] is True and ours["train_config"]["amp"] == "auto"
    assert seed["opti_config"]["name"] == "noam" and seed["train_config"]["amp"] == "off"
    # one update per batch, and a frequency mask that leaves most bins (README: measured)
    assert (ours["train_config"]["accum_grad"], seed["train_config"]["accum_grad"]) == (1, 2)
    ours_masks = {t["type"]: t for t in ours["trans_config"]}
    seed_masks = {t["type"]: t for t in seed["trans_config"]}
    assert (ours_masks["freq_mask"].pop("F"), seed_masks["freq_mask"].pop("F")) == (10, 30)
    assert ours_masks == seed_masks
    changed = {"amp", "noam_restart", "accum_grad"}
    assert {k: v for k, v in ours["train_config"].items() if k not in changed} == {
        k: v for k, v in seed["train_config"].items() if k not in changed
    }
    for section in seed:
        if section not in ("opti_config", "train_config", "trans_config"):
            assert ours[section] == seed[section], section


@pytest.mark.parametrize(
    ("where", "key", "section"),
    [
        (("train_config",), "acum_grad", "train_config"),
        (("set_config", "jconfig"), "batch_sise", "jconfig"),
        (("opti_config",), "warmup", "opti_config"),
        (("model_config",), "encoder_blocks", "model_config"),
        (("decode_config",), "beam_width", "decode_config"),
        ((), "trainconfig", "top-level"),
        (("valid_config", "jconfig"), "bogus_key", "valid_config.jconfig"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, where: tuple, key: str, section: str) -> None:
    raw = _seed_raw()
    target = raw
    for w in where:
        target = target[w]
    target[key] = 1
    with pytest.raises(ConfigError) as err:
        load_train_config(_write(tmp_path, raw))
    msg = str(err.value)
    assert key in msg and str(tmp_path / "c.yaml") in msg
    assert section in msg


def test_unknown_transform_key_names_item(tmp_path: Path) -> None:
    raw = _seed_raw()
    raw["set_config"]["trans_config"][1]["FF"] = 3
    with pytest.raises(ConfigError, match=r"'FF'.*trans_config\[1\]"):
        load_train_config(_write(tmp_path, raw))


def test_bad_values_are_rejected(tmp_path: Path) -> None:
    raw = _seed_raw()
    raw["train_config"]["accum_grad"] = "two"
    with pytest.raises(ConfigError, match="train_config.accum_grad"):
        load_train_config(_write(tmp_path, raw))
    raw = _seed_raw()
    raw["opti_config"]["name"] = "sgd"
    with pytest.raises(ConfigError, match="opti_config.name"):
        load_train_config(_write(tmp_path, raw))
    raw = _seed_raw()
    raw["train_config"]["char_num"] = 100
    with pytest.raises(ConfigError, match="char_num"):
        load_train_config(_write(tmp_path, raw))


def test_overrides_revalidate() -> None:
    cfg = load_train_config(SEED)
    out = apply_overrides(cfg, ["opti_config.factor=0.1", "train_config.lr_scales={encoder: 0.5}"])
    assert out["opti_config"]["factor"] == 0.1
    assert out["train_config"]["lr_scales"] == {"encoder": 0.5}
    assert cfg["opti_config"]["factor"] == 1  # the input is not modified
    with pytest.raises(ConfigError, match="'nope'"):
        apply_overrides(cfg, ["train_config.nope=1"])


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_train_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(bad)
