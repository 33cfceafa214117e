"""ESPnet1 Transformer/Conformer (`model.acc.best` or `snapshot.ep.N` + `model.json`).

ESPnet1 is the layout this project's model copies, so weights keep their names; what needs
work is the configuration (`model.json` = `[idim, odim, args]`), the units (`args.char_list`,
whose last entry `<eos>` is our `<sos/eos>`) and the CMVN, which ESPnet1 applied in the data
loader from the recipe's `cmvn.ark` and which we install inside the model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from e2e_asr.data.cmvn import read_cmvn
from e2e_asr.model.importers.common import (
    BaseModelImportError,
    ImportResult,
    ReportRow,
    as_state_dict,
    check_unit_list,
    find_beside,
    global_cmvn,
    load_torch_file,
    map_state_dict,
    unsupported,
)
from e2e_asr.model.importers.espnet2 import LEGACY_WARNING, espnet_pos_enc_type
from e2e_asr.model.importers.features import feature_config_for

MODULES = {
    "espnet.nets.pytorch_backend.e2e_asr_transformer:E2E": "transformer",
    "espnet.nets.pytorch_backend.e2e_asr_conformer:E2E": "conformer",
}
SNAPSHOT_RE = re.compile(r"snapshot\.ep\.(\d+)$")


def read_model_json(path: Path) -> tuple[int, int, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BaseModelImportError(f"{path}: cannot read ESPnet1 model.json: {e}") from e
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[2], dict)):
        raise BaseModelImportError(f"{path}: expected ESPnet1's [idim, odim, args] layout")
    idim, odim, args = data
    return int(idim), int(odim), args


def _arg(args: dict[str, Any], key: str, where: str, default: Any = ...) -> Any:
    if key in args and args[key] is not None:
        return args[key]
    if default is ...:
        raise BaseModelImportError(f"{where}: args lack '{key}'")
    return default


def convert_config(
    idim: int, odim: int, args: dict[str, Any], where: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, model_config, criterion_config) from ESPnet1 args, or a refusal."""
    module = args.get("model_module", "espnet.nets.pytorch_backend.e2e_asr_transformer:E2E")
    if module not in MODULES:
        raise unsupported(where, "model_module", module, ", ".join(MODULES))
    arch = MODULES[module]
    layer = _arg(args, "transformer_input_layer", where, "conv2d")
    if layer not in ("conv2d", "conv2d6", "conv2d8"):
        raise unsupported(where, "transformer_input_layer", layer, "conv2d, conv2d6, conv2d8")
    for key in (
        "transformer_encoder_selfattn_layer_type",
        "transformer_decoder_selfattn_layer_type",
    ):
        value = args.get(key, "selfattn")
        ok = (
            ("selfattn", "rel_selfattn", "legacy_rel_selfattn")
            if "encoder" in key and arch == "conformer"
            else ("selfattn",)
        )
        if value not in ok:
            raise unsupported(where, key, value, ", ".join(ok))
    if args.get("enc_block_arch") or args.get("dec_block_arch"):
        raise unsupported(where, "custom block architecture", "enc/dec_block_arch", "none")
    mtlalpha = float(_arg(args, "mtlalpha", where, 0.3))
    if mtlalpha == 0.0:
        raise BaseModelImportError(f"{where}: mtlalpha = 0, the model has no CTC branch")
    drop = float(_arg(args, "dropout_rate", where, 0.0))
    attn_drop = float(_arg(args, "transformer_attn_dropout_rate", where, drop))
    adim = int(_arg(args, "adim", where))
    mc: dict[str, Any] = {
        "idim": idim,
        "odim": odim,
        "encoder_type": arch,
        "encoder_attention_dim": adim,
        "encoder_attention_heads": int(_arg(args, "aheads", where)),
        "encoder_linear_units": int(_arg(args, "eunits", where)),
        "encoder_num_blocks": int(_arg(args, "elayers", where)),
        "encoder_input_layer": layer,
        "encoder_dropout_rate": drop,
        "encoder_attention_dropout_rate": attn_drop,
        "decoder_attention_dim": adim,
        "decoder_attention_heads": int(_arg(args, "aheads", where)),
        "decoder_linear_units": int(_arg(args, "dunits", where)),
        "decoder_num_block": int(_arg(args, "dlayers", where)),
        "decoder_dropout_rate": drop,
        "decoder_self_attention_dropout_rate": attn_drop,
        "decoder_src_attention_dropout_rate": attn_drop,
        "ctc_dropout": drop,
        "positional_dropout_rate": drop,
    }
    if arch == "conformer":
        pos = args.get("transformer_encoder_pos_enc_layer_type", "abs_pos")
        att = args.get("transformer_encoder_selfattn_layer_type", "selfattn")
        # ESPnet1 itself runs rel_pos as legacy_rel_pos unless rel_pos_type is latest
        ours = espnet_pos_enc_type(pos, att, args.get("rel_pos_type"))
        if ours is None:
            raise unsupported(
                where,
                "transformer_encoder_pos_enc_layer_type/selfattn_layer_type/rel_pos_type",
                f"{pos}/{att}/{args.get('rel_pos_type')}",
                "abs_pos/selfattn, rel_pos/rel_selfattn (latest or legacy), "
                "legacy_rel_pos/legacy_rel_selfattn",
            )
        if ours == "rel_pos" and args.get("zero_triu", False):
            raise unsupported(where, "zero_triu", True, "False")
        act = args.get("transformer_encoder_activation_type", "swish")
        if act != "swish":
            raise unsupported(where, "transformer_encoder_activation_type", act, "swish")
        mc.update(
            pos_enc_layer_type=ours,
            macaron_style=bool(args.get("macaron_style", False)),
            use_cnn_module=bool(args.get("use_cnn_module", False)),
            cnn_module_kernel=int(args.get("cnn_module_kernel", 31)),
        )
    cc = {
        "size": odim,
        "rate": mtlalpha,
        "smoothing": float(_arg(args, "lsm_weight", where, 0.0)),
        "length_normalized_loss": bool(
            _arg(args, "transformer_length_normalized_loss", where, False)
        ),
    }
    return arch, mc, cc


def units_from_args(args: dict[str, Any], odim: int, where: str) -> tuple[list[str], str | None]:
    """ESPnet1 char_list with the final `<eos>` named `<sos/eos>` (our convention)."""
    chars = args.get("char_list")
    if not isinstance(chars, list) or len(chars) != odim:
        n = len(chars) if isinstance(chars, list) else "no"
        raise BaseModelImportError(f"{where}: args.char_list has {n} entries, odim is {odim}")
    units = [str(c) for c in chars]
    note = None
    if units[-1] != "<sos/eos>":
        note = f"last unit {units[-1]!r} renamed to '<sos/eos>' (ESPnet1 uses id odim-1 as both)"
        units[-1] = "<sos/eos>"
    return units, note


def import_espnet1(
    src: str | os.PathLike,
    cmvn: str | os.PathLike | None = None,
    model_json: str | os.PathLike | None = None,
    feature_config: str | os.PathLike | None = None,
) -> ImportResult:
    src = Path(src)
    mj = Path(model_json) if model_json else find_beside(src, ("model.json",), "ESPnet1 model.json")
    idim, odim, args = read_model_json(mj)
    where = str(mj)
    arch, mc, cc = convert_config(idim, odim, args, where)
    feats = feature_config_for(idim, where, feature_config)  # before the (large) weights
    obj = load_torch_file(src)
    epoch = 0
    m = SNAPSHOT_RE.search(src.name)
    if m:
        epoch = int(m.group(1))
    state = as_state_dict(obj, src)
    warnings: list[str] = []
    if cmvn is not None:
        mean, istd = read_cmvn(cmvn)
        note = "Kaldi global stats -> mean / inverse std"
        provided = global_cmvn(torch.from_numpy(mean), torch.from_numpy(istd), str(cmvn), note)
    else:
        note = "identity: no --cmvn given"
        provided = global_cmvn(torch.zeros(idim), torch.ones(idim), "-", note)
        warnings.append(
            "no --cmvn given: the model gets identity CMVN, but ESPnet1 models expect features "
            "normalised with the recipe's cmvn.ark (data/<train_set>/cmvn.ark); pass it"
        )
    if mc.get("pos_enc_layer_type") == "legacy_rel_pos":
        warnings.append(LEGACY_WARNING)
    init = None
    if cc["rate"] == 1.0:  # ESPnet1 builds no decoder when mtlalpha is 1
        init = ("decoder.", "CTC-only source (mtlalpha 1): new decoder, unused at rate 1")
        warnings.append("mtlalpha = 1: CTC-only model; the attention decoder is untrained")
    state, rows = map_state_dict(state, lambda k: (k, ""), mc, cc, str(src), provided, init)
    units, note = units_from_args(args, odim, where)
    check_unit_list(units, f"{where}: char_list")
    if note:
        rows.append(ReportRow("converted", "char_list", "units", str(odim), note))
    return ImportResult(
        fmt="espnet1",
        architecture=arch,
        model_config=mc,
        criterion_config=cc,
        state_dict=state,
        units=units,
        feature_config=feats,
        epoch=epoch,
        rows=rows,
        warnings=warnings,
        sources=[str(src), str(mj)] + ([str(cmvn)] if cmvn else []),
    )
