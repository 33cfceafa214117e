"""Shared machinery of the base-model importers: safe loading, key mapping, the report.

An importer reads a foreign toolkit's files, turns its configuration into our
`model_config`/`criterion_config`, and gives `map_state_dict` a rename function from the
foreign key names to ours. Every source key ends up in exactly one report row: mapped to a
key of ours (possibly renamed or converted), or dropped with a reason. Every key of ours must be
filled; a missing or mis-shaped tensor is an error naming the key, never a silent random init.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_asr.data.cmvn import stats_to_mean_istd
from e2e_asr.data.io import atomic_write_lines
from e2e_asr.data.units import UnitsError, check_units
from e2e_asr.model.e2e import E2EModel, build_model


class BaseModelImportError(ValueError):
    """The source cannot be converted; the message names the file/key and what to do."""


@dataclass
class ReportRow:
    """One line of `import_report.tsv`."""

    action: str  # mapped | renamed | converted | dropped | added
    source: str  # source key (or file) it came from; "-" if none
    target: str  # our key; "-" if dropped
    shape: str  # shape of our tensor (or of the dropped one)
    note: str = ""

    def tsv(self) -> str:
        return "\t".join((self.action, self.source, self.target, self.shape, self.note))


@dataclass
class ImportResult:
    """What an importer produces; `steps/import_base_model.py` writes it out."""

    fmt: str  # espnet1 | espnet2 | wenet
    architecture: str  # transformer | conformer
    model_config: dict[str, Any]
    criterion_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    units: list[str]
    feature_config: dict[str, Any]
    epoch: int
    rows: list[ReportRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # files read

    def build(self) -> E2EModel:
        """Our model with the imported weights loaded (strict), in eval mode."""
        model = build_model(self.model_config, self.criterion_config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.action] = out.get(row.action, 0) + 1
        return out


def shape_str(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


# numpy reconstruction callables that ESPnet1 snapshots need (the chainer trainer state holds
# numpy scalars/arrays). They only rebuild arrays from bytes; nothing else is allowed.
def _numpy_safe_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    out: list[Any] = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    for name in ("float64", "float32", "int64", "int32", "bool_"):
        out.append(type(np.dtype(getattr(np, name))))
    return out


def load_torch_file(path: Path) -> Any:
    """`torch.load(weights_only=True)` with numpy arrays allowed; clear errors otherwise.

    Never unpickles arbitrary objects: a file that needs other classes is refused with the
    list of what it wants, so the user can extract the state_dict in the source toolkit.
    """
    if not path.is_file():
        raise BaseModelImportError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            wanted = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # not a zip checkpoint: fall back to torch's own message
            wanted = [str(e).splitlines()[0]]
        raise BaseModelImportError(
            f"{path}: refused, it holds Python objects other than tensors and plain data "
            f"({', '.join(wanted[:6])}); loading it could run code. In the source toolkit, "
            f"save only the model weights: torch.save(obj['model'] or model.state_dict(), "
            f"'model.pth'), and import that file"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BaseModelImportError(f"{path}: not a readable torch file ({msg})") from e


def as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping, or an error naming the file.

    Trainer snapshots (ESPnet1 `snapshot.ep.N`, ESPnet2 `checkpoint.pth`) keep the weights
    under "model"; their optimizer and trainer state are not needed.
    """
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise BaseModelImportError(f"{path}: expected a model state_dict (name -> tensor), got {keys}")


def map_state_dict(
    src: dict[str, torch.Tensor],
    rename: Callable[[str], tuple[str | None, str]],
    model_config: dict[str, Any],
    criterion_config: dict[str, Any],
    where: str,
    provided: dict[str, tuple[torch.Tensor, str, str]] | None = None,
    init_prefix: tuple[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[ReportRow]]:
    """Map every source key with `rename(key) -> (our key or None, note)`.

    `None` drops the key (the note says why). `provided` fills our keys that the importer
    derived from other files (CMVN): key -> (tensor, source, note). Our keys that stay unfilled
    are an error, except BatchNorm's `num_batches_tracked` counter (absent from old PyTorch
    files; unused in eval) and keys under `init_prefix = (prefix, reason)`, which keep a fresh
    initialisation (a CTC-only source has no decoder).
    """
    model = build_model(model_config, criterion_config)
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    rows: list[ReportRow] = []
    for key, value in src.items():
        target, note = rename(key)
        if target is None:
            rows.append(ReportRow("dropped", key, "-", shape_str(value), note))
            continue
        if target not in ours:
            raise BaseModelImportError(
                f"{where}: key '{key}' (-> '{target}') has no counterpart in this project's "
                f"model built from the source config; the architecture differs"
            )
        if target in out:
            raise BaseModelImportError(f"{where}: two source keys map to '{target}'")
        expected = ours[target].shape
        if value.shape != expected:
            if value.numel() == ours[target].numel() and value.dim() <= 1 and len(expected) <= 1:
                value = value.reshape(expected)  # e.g. a scalar counter saved as [1]
                action = "reshaped"
            else:
                raise BaseModelImportError(
                    f"{where}: key '{key}' has shape {tuple(value.shape)}, this project's "
                    f"'{target}' needs {tuple(expected)} (config and weights disagree)"
                )
        else:
            action = "mapped" if target == key else "renamed"
        out[target] = value.detach().to(ours[target].dtype).clone()
        rows.append(ReportRow(action, key, target, shape_str(value), note))
    for key, (value, source, note) in (provided or {}).items():
        if key in out:
            raise BaseModelImportError(f"{where}: '{key}' is both in the weights and derived")
        value = torch.as_tensor(value, dtype=ours[key].dtype)
        if value.numel() != ours[key].numel():
            raise BaseModelImportError(
                f"{where}: {source} gives {value.numel()} values for '{key}', the model "
                f"needs {ours[key].numel()}"
            )
        value = value.reshape(ours[key].shape)
        out[key] = value.clone()
        rows.append(ReportRow("converted", source, key, shape_str(value), note))
    missing = [k for k in ours if k not in out]
    for k in list(missing):
        if k.endswith("num_batches_tracked"):
            out[k] = ours[k].clone()
            rows.append(ReportRow("added", "-", k, shape_str(ours[k]), "BatchNorm counter"))
            missing.remove(k)
        elif init_prefix is not None and k.startswith(init_prefix[0]):
            out[k] = ours[k].clone()
            rows.append(ReportRow("added", "-", k, shape_str(ours[k]), init_prefix[1]))
            missing.remove(k)
    if missing:
        raise BaseModelImportError(
            f"{where}: the source lacks {len(missing)} weight(s) this project's model needs, "
            f"e.g. {', '.join(missing[:5])}"
        )
    return out, rows


def find_beside(src: Path, names: tuple[str, ...], what: str) -> Path:
    """A file named like one of `names` in the source's directory or its parent."""
    for d in (src.parent, src.parent.parent):
        for name in names:
            if (d / name).is_file():
                return d / name
    raise BaseModelImportError(
        f"{src}: no {what} found beside it (looked for {', '.join(names)} in {src.parent} "
        f"and {src.parent.parent})"
    )


def stats_to_cmvn(
    mean_stat: np.ndarray, var_stat: np.ndarray, count: float, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, istd) from accumulated sums, as Kaldi/ESPnet/WeNet compute them (var floor 1e-20)."""
    if count <= 0:
        raise BaseModelImportError(f"{where}: CMVN frame count is {count}")
    stats = np.zeros((2, len(mean_stat) + 1))
    stats[0, :-1], stats[1, :-1], stats[0, -1] = mean_stat, var_stat, count
    mean, istd = stats_to_mean_istd(stats)
    return torch.from_numpy(mean), torch.from_numpy(istd)


def global_cmvn(
    mean: torch.Tensor, istd: torch.Tensor, source: str, note: str
) -> dict[str, tuple[torch.Tensor, str, str]]:
    """`map_state_dict`'s `provided` entries for our CMVN buffers, both from one source."""
    return {"global_cmvn.mean": (mean, source, note), "global_cmvn.istd": (istd, source, note)}


def conf_model_config(
    idim: int,
    odim: int,
    arch: str,
    enc: dict[str, Any],
    dec: dict[str, Any],
    ctc_dropout: float,
) -> dict[str, Any]:
    """Our model_config from ESPnet2/WeNet `encoder_conf`/`decoder_conf` (defaults filled in).

    Both toolkits make the decoder as wide as the encoder's output size. A Conformer's own
    settings are added with `conformer_options`.
    """
    d = int(enc["output_size"])
    return {
        "idim": idim,
        "odim": odim,
        "encoder_type": arch,
        "encoder_attention_dim": d,
        "encoder_attention_heads": int(enc["attention_heads"]),
        "encoder_linear_units": int(enc["linear_units"]),
        "encoder_num_blocks": int(enc["num_blocks"]),
        "encoder_input_layer": enc["input_layer"],
        "encoder_dropout_rate": float(enc["dropout_rate"]),
        "encoder_attention_dropout_rate": float(enc["attention_dropout_rate"]),
        "decoder_attention_dim": d,
        "decoder_attention_heads": int(dec["attention_heads"]),
        "decoder_linear_units": int(dec["linear_units"]),
        "decoder_num_block": int(dec["num_blocks"]),
        "decoder_dropout_rate": float(dec["dropout_rate"]),
        "decoder_self_attention_dropout_rate": float(dec["self_attention_dropout_rate"]),
        "decoder_src_attention_dropout_rate": float(dec["src_attention_dropout_rate"]),
        "ctc_dropout": ctc_dropout,
        "positional_dropout_rate": float(enc["positional_dropout_rate"]),
    }


def conformer_options(enc: dict[str, Any], pos_enc_layer_type: str) -> dict[str, Any]:
    """The Conformer part of our model_config from an ESPnet2/WeNet `encoder_conf`."""
    return {
        "pos_enc_layer_type": pos_enc_layer_type,
        "macaron_style": bool(enc["macaron_style"]),
        "use_cnn_module": bool(enc["use_cnn_module"]),
        "cnn_module_kernel": int(enc["cnn_module_kernel"]),
    }


def conf_criterion_config(
    model_conf: dict[str, Any], odim: int, where: str, no_ctc: str
) -> dict[str, Any]:
    """Our criterion_config from an ESPnet2/WeNet `model_conf`; `no_ctc` says why a CTC
    weight of 0 is refused."""
    ctc_weight = float(model_conf.get("ctc_weight", 0.5))
    if ctc_weight == 0.0:
        raise BaseModelImportError(f"{where}: model_conf.ctc_weight = 0, {no_ctc}")
    return {
        "size": odim,
        "rate": ctc_weight,
        "smoothing": float(model_conf.get("lsm_weight", 0.0)),
        "length_normalized_loss": bool(model_conf.get("length_normalized_loss", False)),
    }


def check_unit_list(units: list[str], where: str) -> list[str]:
    """The project's unit layout (<blank> 0, <unk> 1, <sos/eos> last, no duplicates)."""
    try:
        check_units(units, where)
    except UnitsError as e:
        raise BaseModelImportError(str(e)) from e
    return units


def write_report(path: str | os.PathLike, rows: list[ReportRow]) -> None:
    """`import_report.tsv`: header + one row per key (written atomically)."""
    atomic_write_lines(path, ["action\tsource\ttarget\tshape\tnote", *(r.tsv() for r in rows)])


def format_table(rows: list[ReportRow]) -> str:
    """Aligned text table of the report for the terminal."""
    head = ("action", "source", "target", "shape", "note")
    cells = [head, *((r.action, r.source, r.target, r.shape, r.note) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    return "\n".join(
        "  ".join(c[i].ljust(widths[i]) for i in range(4)) + ("  " + c[4] if c[4] else "")
        for c in cells
    )


def unsupported(where: str, what: str, value: Any, supported: str) -> BaseModelImportError:
    """The standard refusal: names the file, the setting and what would convert."""
    return BaseModelImportError(
        f"{where}: {what} = {value!r} is not supported by this project's model "
        f"(supported: {supported}); it cannot be converted without changing its outputs"
    )
