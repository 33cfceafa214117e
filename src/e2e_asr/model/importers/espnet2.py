"""ESPnet2 Transformer/Conformer ASR models (`*.pth` + the experiment's `config.yaml`).

ESPnet2's encoder/decoder/CTC keep ESPnet1's module names, so those weights map one to one.
The differences are around them: the units are `token_list` in the config, the global CMVN is
the `normalize` module (`normalize.mean`, `normalize.std`, computed from `feats_stats.npz`
with count/sum/sum_square), and a feature front end may be part of the model.

Conformers with ESPnet2's default `rel_pos_type: legacy` (LegacyRelPositionalEncoding +
LegacyRelPositionMultiHeadedAttention) convert to `pos_enc_layer_type: legacy_rel_pos`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from e2e_asr.model.importers.common import (
    BaseModelImportError,
    ImportResult,
    ReportRow,
    as_state_dict,
    check_unit_list,
    conf_criterion_config,
    conf_model_config,
    conformer_options,
    find_beside,
    global_cmvn,
    load_torch_file,
    map_state_dict,
    stats_to_cmvn,
    unsupported,
)
from e2e_asr.model.importers.features import fbank_config, feature_config_for

ENCODERS = ("transformer", "conformer")
# ESPnet2 defaults of the settings we read (espnet2/asr/encoder|decoder, espnet_model.py).
ENCODER_DEFAULTS: dict[str, Any] = {
    "output_size": 256,
    "attention_heads": 4,
    "linear_units": 2048,
    "num_blocks": 6,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.0,
    "input_layer": "conv2d",
    "normalize_before": True,
    "concat_after": False,
    "positionwise_layer_type": "linear",
    "interctc_layer_idx": [],
    "interctc_use_conditioning": False,
}
CONFORMER_DEFAULTS: dict[str, Any] = {
    "macaron_style": False,
    "rel_pos_type": "legacy",
    "pos_enc_layer_type": "rel_pos",
    "selfattention_layer_type": "rel_selfattn",
    "activation_type": "swish",
    "use_cnn_module": True,
    "cnn_module_kernel": 31,
}
DECODER_DEFAULTS: dict[str, Any] = {
    "attention_heads": 4,
    "linear_units": 2048,
    "num_blocks": 6,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "self_attention_dropout_rate": 0.0,
    "src_attention_dropout_rate": 0.0,
    "input_layer": "embed",
    "use_output_layer": True,
    "normalize_before": True,
    "concat_after": False,
}


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BaseModelImportError(f"{path}: cannot read config: {e}") from e
    if not isinstance(data, dict):
        raise BaseModelImportError(f"{path}: expected a mapping at the top level")
    return data


def _section(cfg: dict[str, Any], key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **(cfg.get(key) or {})}


ESPNET_POS_PAIRS = {
    ("abs_pos", "selfattn"): "abs_pos",
    ("rel_pos", "rel_selfattn"): "rel_pos",
    ("legacy_rel_pos", "legacy_rel_selfattn"): "legacy_rel_pos",
}


def espnet_pos_enc_type(pos: str, att: str, rel_pos_type: str | None) -> str | None:
    """Our `pos_enc_layer_type` for an ESPnet1/ESPnet2 Conformer, None if not convertible.

    As ESPnet's Conformer encoders do: unless `rel_pos_type` is `latest` (ESPnet2's default
    and ESPnet1's unset value are `legacy`), rel_pos/rel_selfattn run as the legacy classes.
    """
    if rel_pos_type in (None, "legacy"):
        pos = "legacy_rel_pos" if pos == "rel_pos" else pos
        att = "legacy_rel_selfattn" if att == "rel_selfattn" else att
    elif rel_pos_type != "latest" or "legacy" in pos or "legacy" in att:
        return None
    return ESPNET_POS_PAIRS.get((pos, att))


LEGACY_WARNING = (
    "legacy relative attention (legacy_rel_pos): as in ESPnet, a frame's output depends on "
    "the padded length of its batch; decode such a model one utterance at a time for the "
    "numbers ESPnet gives on single utterances"
)


def convert_config(
    cfg: dict[str, Any], idim: int, odim: int, where: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, model_config, criterion_config) from an ESPnet2 config, or a refusal."""
    arch = cfg.get("encoder")
    if arch not in ENCODERS:
        raise unsupported(where, "encoder", arch, ", ".join(ENCODERS))
    for key in ("preencoder", "postencoder"):
        if cfg.get(key):
            raise unsupported(where, key, cfg[key], "none")
    if cfg.get("decoder") not in ("transformer", None):
        raise unsupported(where, "decoder", cfg.get("decoder"), "transformer, none (CTC only)")
    defaults = {**ENCODER_DEFAULTS, **(CONFORMER_DEFAULTS if arch == "conformer" else {})}
    enc = _section(cfg, "encoder_conf", defaults)
    dec = _section(cfg, "decoder_conf", DECODER_DEFAULTS)
    if enc["input_layer"] not in ("conv2d", "conv2d6", "conv2d8"):
        raise unsupported(where, "encoder_conf.input_layer", enc["input_layer"], "conv2d(6|8)")
    checks = [
        ("encoder_conf.normalize_before", enc["normalize_before"], True),
        ("encoder_conf.concat_after", enc["concat_after"], False),
        ("encoder_conf.positionwise_layer_type", enc["positionwise_layer_type"], "linear"),
        ("encoder_conf.interctc_use_conditioning", enc["interctc_use_conditioning"], False),
        ("decoder_conf.normalize_before", dec["normalize_before"], True),
        ("decoder_conf.concat_after", dec["concat_after"], False),
        ("decoder_conf.input_layer", dec["input_layer"], "embed"),
        ("decoder_conf.use_output_layer", dec["use_output_layer"], True),
    ]
    for name, value, ok in checks:
        if value != ok:
            raise unsupported(where, name, value, repr(ok))
    ctc_dropout = float((cfg.get("ctc_conf") or {}).get("dropout_rate", 0.0))
    mc = conf_model_config(idim, odim, arch, enc, dec, ctc_dropout)
    if arch == "conformer":
        pos, att = enc["pos_enc_layer_type"], enc["selfattention_layer_type"]
        ours = espnet_pos_enc_type(pos, att, enc["rel_pos_type"])
        if ours is None:
            raise unsupported(
                where,
                "encoder_conf.pos_enc_layer_type/selfattention_layer_type/rel_pos_type",
                f"{pos}/{att}/{enc['rel_pos_type']}",
                "abs_pos/selfattn, rel_pos/rel_selfattn (latest or legacy), "
                "legacy_rel_pos/legacy_rel_selfattn (legacy)",
            )
        if ours == "rel_pos" and enc.get("zero_triu", False):
            raise unsupported(where, "encoder_conf.zero_triu", True, "False")
        act = enc["activation_type"]
        if act != "swish":
            raise unsupported(where, "encoder_conf.activation_type", act, "swish")
        mc.update(conformer_options(enc, ours))
    cc = conf_criterion_config(cfg.get("model_conf") or {}, odim, where, "the model has no CTC")
    return arch, mc, cc


def read_token_list(cfg: dict[str, Any], config_path: Path) -> list[str]:
    tokens = cfg.get("token_list")
    if isinstance(tokens, str):  # a path to tokens.txt, one token per line
        path = Path(tokens)
        if not path.is_absolute() and not path.is_file():
            path = config_path.parent / path.name
        try:
            tokens = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except OSError as e:
            raise BaseModelImportError(f"{config_path}: token_list file {tokens}: {e}") from e
        tokens = [t for t in tokens if t]
    if not isinstance(tokens, list) or len(tokens) < 3:
        raise BaseModelImportError(f"{config_path}: no usable token_list")
    token_type = cfg.get("token_type", "char")
    if token_type != "char":
        raise unsupported(
            str(config_path),
            "token_type",
            token_type,
            "char (stage 2 splits transcripts into characters, not subwords)",
        )
    return check_unit_list([str(t) for t in tokens], f"{config_path}: token_list")


def _stats_file(cfg: dict[str, Any], config_path: Path, model_path: Path) -> Path | None:
    given = (cfg.get("normalize_conf") or {}).get("stats_file")
    candidates = []
    if given:
        candidates += [Path(given), config_path.parent / Path(given).name]
        # recipes store paths relative to egs2/<corpus>/asr1; the config sits in exp/<dir>/
        candidates.append(config_path.parent.parent.parent / given)
    candidates += [model_path.parent / "feats_stats.npz", config_path.parent / "feats_stats.npz"]
    for c in candidates:
        if c.is_file():
            return c
    return None


def cmvn_from_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """ESPnet2 `feats_stats.npz` (count, sum, sum_square) -> (mean, istd)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            count, total, square = float(z["count"]), z["sum"], z["sum_square"]
    except (OSError, KeyError, ValueError) as e:
        raise BaseModelImportError(f"{path}: not an ESPnet2 stats file ({e})") from e
    return stats_to_cmvn(total, square, count, str(path))


def import_espnet2(
    src: str | os.PathLike,
    config: str | os.PathLike | None = None,
    feature_config: str | os.PathLike | None = None,
) -> ImportResult:
    src = Path(src)
    config_path = Path(config) if config else find_beside(src, ("config.yaml",), "config.yaml")
    cfg = read_yaml(config_path)
    where = str(config_path)
    units = read_token_list(cfg, config_path)
    state = as_state_dict(load_torch_file(src), src)
    warnings: list[str] = []

    frontend = cfg.get("frontend")
    if frontend not in (None, "default"):
        raise unsupported(where, "frontend", frontend, "none (Kaldi features) or default")
    if frontend is None:
        idim = cfg.get("input_size")
        if not idim:
            raise BaseModelImportError(f"{where}: frontend is null but input_size is not set")
        feats = feature_config_for(int(idim), where, feature_config)
    else:
        idim = int((cfg.get("frontend_conf") or {}).get("n_mels", 80))
        feats = feature_config_for(idim, where, feature_config) if feature_config else None
        feats = feats or fbank_config(idim)
        warnings.append(
            "the model was trained on ESPnet2's own STFT log-mel front end, not Kaldi fbank: "
            f"stage 1 computes {idim}-dim Kaldi fbank, close but not equal. Fine-tune with "
            "train_config.cmvn: data (CMVN from your data) and expect the first epoch to adapt"
        )
    arch, mc, cc = convert_config(cfg, int(idim), len(units), where)

    normalize = cfg.get("normalize")
    norm_conf = cfg.get("normalize_conf") or {}
    provided: dict[str, tuple[torch.Tensor, str, str]] = {}
    if normalize == "global_mvn":
        if "normalize.mean" in state and "normalize.std" in state:
            mean, std = state.pop("normalize.mean").float(), state.pop("normalize.std").float()
            istd, how, origin = 1.0 / std, "GlobalMVN std -> 1/std", "normalize.std"
            provided["global_cmvn.mean"] = (mean, "normalize.mean", "GlobalMVN mean")
        else:
            stats = _stats_file(cfg, config_path, src)
            if stats is None:
                raise BaseModelImportError(
                    f"{src}: no normalize.mean/std in the weights and the stats file "
                    f"{norm_conf.get('stats_file')!r} of {where} was not found; copy "
                    "feats_stats.npz beside the model"
                )
            mean, istd = cmvn_from_npz(stats)
            how, origin = "count/sum/sum_square -> mean, 1/std", str(stats)
            provided["global_cmvn.mean"] = (mean, origin, how)
        if not norm_conf.get("norm_means", True):
            provided["global_cmvn.mean"] = (torch.zeros(idim), "-", "norm_means: false")
        if not norm_conf.get("norm_vars", True):
            istd, how = torch.ones(idim), "norm_vars: false"
        provided["global_cmvn.istd"] = (istd, origin, how)
    elif normalize is None:
        provided = global_cmvn(torch.zeros(idim), torch.ones(idim), "-", "no normalize in config")
    else:
        raise unsupported(where, "normalize", normalize, "global_mvn or none")

    def rename(key: str) -> tuple[str | None, str]:
        for prefix, why in (
            ("frontend.", "feature front end: features come from stage 1"),
            ("specaug.", "SpecAugment has no weights in inference"),
            ("normalize.", "normalisation statistics, converted to global_cmvn"),
        ):
            if key.startswith(prefix):
                return None, why
        return key, ""

    if mc.get("pos_enc_layer_type") == "legacy_rel_pos":
        warnings.append(LEGACY_WARNING)
    init = None
    if cfg.get("decoder") is None or cc["rate"] == 1.0:  # ESPnet2 then builds no decoder
        init = ("decoder.", "CTC-only source: new decoder, unused while criterion rate is 1")
        warnings.append("CTC-only model: the attention decoder is untrained; keep rate 1")
        cc["rate"] = 1.0
    state, rows = map_state_dict(state, rename, mc, cc, str(src), provided, init)
    rows.append(ReportRow("converted", "token_list", "units", str(len(units)), where))
    return ImportResult(
        fmt="espnet2",
        architecture=arch,
        model_config=mc,
        criterion_config=cc,
        state_dict=state,
        units=units,
        feature_config=feats,
        epoch=0,
        rows=rows,
        warnings=warnings,
        sources=[str(src), where],
    )
