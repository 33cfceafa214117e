"""WeNet Transformer/Conformer (`*.pt` + `train.yaml` + `units.txt` + `global_cmvn`).

WeNet derives from ESPnet and keeps most module names. Differences handled here: the CMVN
lives in the encoder (`encoder.global_cmvn.mean/istd`, else the `global_cmvn` JSON with
mean_stat/var_stat/frame_num), conv2d6/conv2d8 subsampling name their projection
`embed.linear` (ours `embed.out.0`), and the bidirectional decoder nests its left-to-right
half under `decoder.left_decoder` (the right-to-left half is dropped: we decode left to right).

WeNet's `rel_pos` Conformer (its default) scores queries against *absolute* key positions
(WeNet removed ESPnet's rel_shift): it converts to `pos_enc_layer_type: wenet_rel_pos`, with
the same `linear_pos`/`pos_bias_u`/`pos_bias_v` names. WeNet's LayerNorms use eps 1e-5
(`norm_eps`), carried over as `layer_norm_eps`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_asr.data.cmvn import read_cmvn
from e2e_asr.data.units import UnitsError, read_units
from e2e_asr.model.importers.common import (
    BaseModelImportError,
    ImportResult,
    ReportRow,
    as_state_dict,
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
from e2e_asr.model.importers.espnet2 import read_yaml
from e2e_asr.model.importers.features import fbank_config, feature_config_for

ENCODERS = ("transformer", "conformer")
DECODERS = ("transformer", "bitransformer")
KNOWN_REFUSED = {
    "squeezeformer": "Squeezeformer blocks",
    "efficientConformer": "Efficient Conformer (grouped attention, strided blocks)",
    "branchformer": "Branchformer blocks",
    "e_branchformer": "E-Branchformer blocks",
    "paraformer": "Paraformer",
    "transducer": "RNN-T",
}
EPOCH_RE = re.compile(r"^(?:epoch_)?(\d+)\.pt$")
# WeNet defaults of the settings we read (wenet/transformer/encoder.py, decoder.py).
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
    "layer_norm_type": "layer_norm",
    "norm_eps": 1e-5,
    "final_norm": True,
    "mlp_type": "position_wise_feed_forward",
    "query_bias": True,
    "key_bias": True,
    "value_bias": True,
    "mlp_bias": True,
}
TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "pos_enc_layer_type": "abs_pos",
    "selfattention_layer_type": "selfattn",
    "activation_type": "relu",
}
CONFORMER_DEFAULTS: dict[str, Any] = {
    "pos_enc_layer_type": "rel_pos",
    "selfattention_layer_type": "rel_selfattn",
    "activation_type": "swish",
    "macaron_style": True,
    "use_cnn_module": True,
    "cnn_module_kernel": 15,
    "causal": False,
    "cnn_module_norm": "batch_norm",
    "conv_bias": True,
    "conv_inner_factor": 2,
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
    "src_attention": True,
    "activation_type": "relu",
    "layer_norm_type": "layer_norm",
    "tie_word_embedding": False,
}


def convert_config(
    cfg: dict[str, Any], idim: int, odim: int, where: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, model_config, criterion_config) from a WeNet train.yaml, or a refusal."""
    arch = cfg.get("encoder")
    if arch not in ENCODERS:
        what = KNOWN_REFUSED.get(str(arch), "this encoder")
        raise unsupported(where, "encoder", arch, f"{', '.join(ENCODERS)}; {what} is not")
    model = cfg.get("model", "asr_model")
    if model not in ("asr_model", None):
        raise unsupported(where, "model", model, "asr_model")
    if cfg.get("decoder") not in DECODERS:
        raise unsupported(where, "decoder", cfg.get("decoder"), ", ".join(DECODERS))
    defaults = {
        **ENCODER_DEFAULTS,
        **(CONFORMER_DEFAULTS if arch == "conformer" else TRANSFORMER_DEFAULTS),
    }
    enc = {**defaults, **(cfg.get("encoder_conf") or {})}
    dec = {**DECODER_DEFAULTS, **(cfg.get("decoder_conf") or {})}
    pos, att = enc["pos_enc_layer_type"], enc["selfattention_layer_type"]
    if arch == "conformer" and (pos, att) not in (
        ("abs_pos", "selfattn"),
        ("rel_pos", "rel_selfattn"),
    ):
        raise unsupported(
            where,
            "encoder_conf.pos_enc_layer_type/selfattention_layer_type",
            f"{pos}/{att}",
            "abs_pos/selfattn or rel_pos/rel_selfattn",
        )
    if enc["input_layer"] not in ("conv2d", "conv2d6", "conv2d8"):
        raise unsupported(where, "encoder_conf.input_layer", enc["input_layer"], "conv2d(6|8)")
    want_act = "swish" if arch == "conformer" else "relu"
    checks = []
    if arch == "transformer":
        checks += [
            ("encoder_conf.pos_enc_layer_type", pos, "abs_pos"),
            ("encoder_conf.selfattention_layer_type", att, "selfattn"),
        ]
    norm_eps = float(enc["norm_eps"])
    checks += [
        ("decoder_conf.norm_eps", float(dec.get("norm_eps", norm_eps)), norm_eps),
        ("encoder_conf.activation_type", enc["activation_type"], want_act),
        ("encoder_conf.normalize_before", enc["normalize_before"], True),
        ("encoder_conf.final_norm", enc["final_norm"], True),
        ("encoder_conf.layer_norm_type", enc["layer_norm_type"], "layer_norm"),
        ("encoder_conf.mlp_type", enc["mlp_type"], "position_wise_feed_forward"),
        ("decoder_conf.input_layer", dec["input_layer"], "embed"),
        ("decoder_conf.use_output_layer", dec["use_output_layer"], True),
        ("decoder_conf.normalize_before", dec["normalize_before"], True),
        ("decoder_conf.src_attention", dec["src_attention"], True),
        ("decoder_conf.activation_type", dec["activation_type"], "relu"),
        ("decoder_conf.layer_norm_type", dec["layer_norm_type"], "layer_norm"),
    ]
    # A static chunk size makes WeNet mask attention in chunks even in full-utterance decoding
    checks.append(("encoder_conf.static_chunk_size", enc.get("static_chunk_size", 0), 0))
    tokenizer = cfg.get("tokenizer", "char")
    if tokenizer != "char" or (cfg.get("tokenizer_conf") or {}).get("bpe_path"):
        raise unsupported(
            where, "tokenizer", tokenizer, "char (stage 2 splits transcripts into characters)"
        )
    for key in ("query_bias", "key_bias", "value_bias", "mlp_bias"):
        checks.append((f"encoder_conf.{key}", enc[key], True))
    if arch == "conformer":
        checks += [
            ("encoder_conf.causal", enc["causal"], False),
            ("encoder_conf.cnn_module_norm", enc["cnn_module_norm"], "batch_norm"),
            ("encoder_conf.conv_bias", enc["conv_bias"], True),
            ("encoder_conf.conv_inner_factor", enc["conv_inner_factor"], 2),
        ]
    for name, value, ok in checks:
        if value != ok:
            raise unsupported(where, name, value, repr(ok))
    mc = conf_model_config(idim, odim, arch, enc, dec, ctc_dropout=0.0)
    mc["layer_norm_eps"] = norm_eps
    if arch == "conformer":
        mc.update(conformer_options(enc, "wenet_rel_pos" if pos == "rel_pos" else "abs_pos"))
    cc = conf_criterion_config(cfg.get("model_conf") or {}, odim, where, "the CTC is untrained")
    return arch, mc, cc


def read_wenet_cmvn(path: Path, is_json: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """WeNet `global_cmvn`: JSON with mean_stat/var_stat/frame_num, or Kaldi stats."""
    if not is_json:
        try:
            mean, istd = read_cmvn(path)
        except ValueError as e:
            raise BaseModelImportError(str(e)) from e
        return torch.from_numpy(mean), torch.from_numpy(istd)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        mean_stat = np.asarray(data["mean_stat"], dtype=np.float64)
        var_stat = np.asarray(data["var_stat"], dtype=np.float64)
        count = float(data["frame_num"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BaseModelImportError(
            f"{path}: not a WeNet global_cmvn JSON (mean_stat, var_stat, frame_num): {e}"
        ) from e
    return stats_to_cmvn(mean_stat, var_stat, count, str(path))


def _cmvn_file(cfg: dict[str, Any], config_path: Path, src: Path) -> tuple[Path | None, bool]:
    conf = cfg.get("cmvn_conf") or {}
    given = conf.get("cmvn_file", cfg.get("cmvn_file"))
    is_json = bool(conf.get("is_json_cmvn", cfg.get("is_json_cmvn", True)))
    candidates = [Path(given), config_path.parent / Path(given).name] if given else []
    candidates += [src.parent / "global_cmvn", config_path.parent / "global_cmvn"]
    for c in candidates:
        if c.is_file():
            return c, is_json
    return None, is_json


def _units_file(cfg: dict[str, Any], config_path: Path, src: Path) -> Path:
    table = (cfg.get("tokenizer_conf") or {}).get("symbol_table_path")
    if table:
        for c in (Path(table), config_path.parent / Path(table).name):
            if c.is_file():
                return c
    return find_beside(src, ("units.txt", "lang_char.txt", "words.txt"), "WeNet units.txt")


def import_wenet(
    src: str | os.PathLike,
    config: str | os.PathLike | None = None,
    units: str | os.PathLike | None = None,
    cmvn: str | os.PathLike | None = None,
    feature_config: str | os.PathLike | None = None,
) -> ImportResult:
    src = Path(src)
    config_path = Path(config) if config else find_beside(src, ("train.yaml",), "train.yaml")
    cfg = read_yaml(config_path)
    where = str(config_path)
    units_path = Path(units) if units else _units_file(cfg, config_path, src)
    try:
        unit_list = read_units(units_path)
    except (OSError, UnitsError) as e:
        raise BaseModelImportError(f"{units_path}: cannot read WeNet units: {e}") from e
    idim = int(cfg.get("input_dim") or 80)
    odim = int(cfg.get("output_dim") or len(unit_list))
    if odim != len(unit_list):
        raise BaseModelImportError(
            f"{units_path}: {len(unit_list)} units but {where} says output_dim {odim}"
        )
    arch, mc, cc = convert_config(cfg, idim, odim, where)
    state = as_state_dict(load_torch_file(src), src)
    warnings: list[str] = []

    provided: dict[str, tuple[torch.Tensor, str, str]] = {}
    if "encoder.global_cmvn.mean" in state and "encoder.global_cmvn.istd" in state:
        for part in ("mean", "istd"):
            key = f"encoder.global_cmvn.{part}"
            provided[f"global_cmvn.{part}"] = (state.pop(key), key, "WeNet GlobalCMVN buffer")
        if cmvn is not None:
            warnings.append(f"--cmvn {cmvn} ignored: the weights carry their own CMVN")
    else:
        path, is_json = (Path(cmvn), True) if cmvn else _cmvn_file(cfg, config_path, src)
        if path is not None:
            if cmvn is not None:
                is_json = path.read_bytes()[:1] == b"{"
            mean, istd = read_wenet_cmvn(path, is_json)
            how = "mean_stat/var_stat/frame_num -> mean, 1/std"
            provided = global_cmvn(mean, istd, str(path), how)
        else:
            note = "identity: no CMVN found"
            provided = global_cmvn(torch.zeros(idim), torch.ones(idim), "-", note)
            warnings.append("no CMVN in the weights and no global_cmvn file: identity CMVN")

    renames = {}
    if mc["encoder_input_layer"] in ("conv2d6", "conv2d8"):
        renames["encoder.embed.linear."] = "encoder.embed.out.0."

    def rename(key: str) -> tuple[str | None, str]:
        if key.startswith("decoder.right_decoder."):
            return None, "right-to-left decoder of the bitransformer (we decode left to right)"
        if key.startswith("decoder.left_decoder."):
            return "decoder." + key[len("decoder.left_decoder.") :], "bitransformer left half"
        for old, new in renames.items():
            if key.startswith(old):
                return new + key[len(old) :], "WeNet conv2d6/8 projection name"
        return key, ""

    state, rows = map_state_dict(state, rename, mc, cc, str(src), provided)
    rows.append(ReportRow("converted", str(units_path), "units", str(odim), "WeNet units.txt"))
    fbank = (cfg.get("dataset_conf") or {}).get("fbank_conf") or {}
    if feature_config is not None:
        feats = feature_config_for(idim, where, feature_config)
    else:
        feats = fbank_config(
            int(fbank.get("num_mel_bins", idim)),
            frame_length_ms=float(fbank.get("frame_length", 25)),
            frame_shift_ms=float(fbank.get("frame_shift", 10)),
        )
        if feats["dim"] != idim:
            raise BaseModelImportError(
                f"{where}: fbank_conf gives {feats['dim']} bins but input_dim is {idim}"
            )
    m = EPOCH_RE.match(src.name)
    return ImportResult(
        fmt="wenet",
        architecture=arch,
        model_config=mc,
        criterion_config=cc,
        state_dict=state,
        units=unit_list,
        feature_config=feats,
        epoch=int(m.group(1)) if m else 0,
        rows=rows,
        warnings=warnings,
        sources=[str(src), where, str(units_path)],
    )
