"""Build the model to train and check it against the data before the first step.

``build_setup`` is the entry: a ``ModelSetup`` (model, config, units, feature config, where the
base left off) from a base checkpoint or from scratch; ``prepare_model`` then moves it to the
device and freezes what ``train_config.freeze`` names. Adapters (LoRA, issue 16) wrap the model
there too, after the weights are loaded and before the optimizer is built from the trainable
parameters.

Fine-tuning (``--base-model``): the architecture comes from the base checkpoint (its weights
fix it); the dropout rates and the criterion come from the training config. Then, before any
training, the data directory made by stage 2 is compared with the base model, and every
mismatch is an error that says what to change:

* feature dim (json ``shape``) vs the model's ``idim``;
* feature type/options (``feature.yaml``) vs the base payload's ``feature_config``;
* units (``units.txt``) vs the base payload's ``units``; json units that only *add* symbols
  (same prefix, new ones before ``<sos/eos>``) grow the model with
  ``e2e_asr.model.vocab.extend_model_units``;
* CMVN: ``train_config.cmvn: base`` needs stats inside the base model, ``data`` needs
  ``cmvn.ark`` in the data directory.

From scratch: ``--units``, ``--cmvn``, ``--feature-config`` give what a base model would have,
and the model is built from ``model_config`` with ``idim``/``odim`` taken from the data.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from e2e_asr.data.cmvn import read_cmvn
from e2e_asr.data.features import FeatureConfig, feature_mismatch
from e2e_asr.data.units import SOS_EOS, read_units
from e2e_asr.model import E2EModel, build_model
from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint, load_weights
from e2e_asr.model.vocab import extend_model_units
from e2e_asr.train import lora
from e2e_asr.train.config import set_units_dims
from e2e_asr.train.errors import TrainError
from e2e_asr.train.optimizer import apply_freeze

log = logging.getLogger(__name__)


class MismatchError(ValueError):
    """The data does not fit the model; the message says what to change."""


@dataclass
class ModelSetup:
    model: E2EModel
    config: dict[str, Any]
    units: list[str]
    feature_config: dict[str, Any]
    base_epoch: int = 0
    base_step: int = 0
    base_path: str | None = None
    base_opti_config: dict[str, Any] | None = None  # the base's own schedule (LR report)
    notes: list[str] = field(default_factory=list)


def check_features(
    data_fc: FeatureConfig | dict[str, Any],
    base_fc: FeatureConfig | dict[str, Any],
    data_where: str,
) -> None:
    """The project's one feature rule (``e2e_asr.data.features.feature_mismatch``)."""
    try:
        diffs = feature_mismatch(data_fc, base_fc, ("data", "base"))
    except ValueError as exc:
        raise MismatchError(str(exc)) from exc
    if diffs:
        raise MismatchError(
            f"{data_where} does not match the base model's feature_config ({'; '.join(diffs)}). "
            "Extract features with the base model's settings (conf/ feature config, stage 1)."
        )


def check_dim(data_dim: int, idim: int, json_where: str, model_where: str) -> None:
    if data_dim != idim:
        raise MismatchError(
            f"{json_where}: features have dim {data_dim} but {model_where} expects idim {idim}. "
            "Re-extract features with the model's feature config (e.g. fbank 80 vs mfcc_hires 40)."
        )


def _load_feature_yaml(path: Path) -> dict[str, Any]:
    try:
        return FeatureConfig.from_yaml(path).to_dict()
    except FileNotFoundError as exc:
        raise MismatchError(f"{path}: missing (stage 1/2 write it next to the json)") from exc
    except ValueError as exc:
        raise MismatchError(str(exc)) from exc


def _units_change(base: list[str], data: list[str], data_where: str, base_where: str) -> bool:
    """False if equal, True if ``data`` extends ``base``; error otherwise."""
    if data == base:
        return False
    if (
        len(data) > len(base)
        and data[: len(base) - 1] == base[:-1]
        and data[-1] == SOS_EOS == base[-1]
    ):
        return True
    first = next(
        (i for i, (a, b) in enumerate(zip(base, data, strict=False)) if a != b),
        min(len(base), len(data)),
    )
    got = data[first] if first < len(data) else "<end>"
    want = base[first] if first < len(base) else "<end>"
    raise MismatchError(
        f"{data_where} ({len(data)} units) differs from the units of {base_where} "
        f"({len(base)} units) at id {first}: data {got!r} vs base {want!r}. Tokenize the data "
        "with the base model's units (stage 2 uses them when base_model is set)."
    )


def _has_cmvn(state: dict[str, torch.Tensor]) -> bool:
    mean, istd = state.get("global_cmvn.mean"), state.get("global_cmvn.istd")
    if mean is None or istd is None:
        return False
    # the model is built with identity stats (0 / 1); those mean "never set"
    return not (bool(torch.all(mean == 0)) and bool(torch.all(istd == 1)))


def _set_cmvn(model: E2EModel, path: Path) -> None:
    try:
        mean, istd = read_cmvn(path)
    except FileNotFoundError as exc:
        raise MismatchError(
            f"{path}: CMVN stats missing; run stage 2 (it writes cmvn.ark) or set "
            "train_config.cmvn: base"
        ) from exc
    except ValueError as exc:
        raise MismatchError(str(exc)) from exc
    if mean.shape[0] != model.idim:
        raise MismatchError(
            f"{path}: CMVN dim {mean.shape[0]} but the model idim is {model.idim}; the stats "
            "come from other features: re-run stage 2 on features made with the model's "
            "feature config"
        )
    model.set_cmvn(torch.from_numpy(mean), torch.from_numpy(istd))


def setup_from_base(
    cfg: dict[str, Any], base_path: Path, json_dir: Path, data_dim: int
) -> ModelSetup:
    payload = load_checkpoint(base_path)
    where = f"base model {base_path}"
    base_cfg = payload.get("config") or {}
    if "model_config" not in base_cfg:
        raise MismatchError(f"{where}: its payload has no config.model_config")
    cfg = copy.deepcopy(cfg)
    notes: list[str] = []
    # The weights fix the architecture; dropout is a training choice and comes from the config.
    model_cfg = dict(base_cfg["model_config"])
    for key, value in cfg["model_config"].items():
        if "dropout" in key:
            model_cfg[key] = value
        elif key != "name" and key in model_cfg and model_cfg[key] != value:
            notes.append(
                f"model_config.{key}: config says {value!r}, the base model has "
                f"{model_cfg[key]!r}; using the base model's"
            )
    cfg["model_config"] = model_cfg
    base_units = payload.get("units")
    if not base_units:
        raise MismatchError(f"{where}: its payload has no units")
    check_dim(data_dim, int(model_cfg["idim"]), f"{json_dir}/train.*.json", where)

    data_fc = _load_feature_yaml(json_dir / "feature.yaml")
    if payload.get("feature_config"):
        try:
            base_fc = FeatureConfig.from_dict(payload["feature_config"], f"{where} feature_config")
        except ValueError as exc:
            raise MismatchError(str(exc)) from exc
        check_features(data_fc, base_fc, str(json_dir / "feature.yaml"))
    else:
        notes.append(f"{where} records no feature_config; feature type not checked")

    units_path = json_dir / "units.txt"
    try:
        data_units = read_units(units_path)
    except FileNotFoundError as exc:
        raise MismatchError(f"{units_path}: missing (stage 2 writes it)") from exc
    grow = _units_change(list(base_units), data_units, str(units_path), where)

    set_units_dims(cfg, int(model_cfg["idim"]), len(base_units))
    model = build_model(cfg["model_config"], cfg["criterion_config"])
    try:
        load_weights(model, payload["model"], where)
    except CheckpointError as exc:
        raise MismatchError(str(exc)) from exc
    units = list(base_units)
    if grow:
        model = extend_model_units(model, list(base_units), data_units)
        if model.odim != len(data_units):
            raise MismatchError(
                f"extend_model_units left odim {model.odim}, expected {len(data_units)}"
            )
        notes.append(f"vocabulary grown from {len(base_units)} to {len(data_units)} units")
        units = data_units
        set_units_dims(cfg, int(model_cfg["idim"]), len(units))
        cfg["model_config"]["odim"] = len(units)

    mode = cfg["train_config"]["cmvn"]
    if mode == "base":
        if not _has_cmvn(payload["model"]):
            raise MismatchError(
                f"{where} holds no CMVN stats; set train_config.cmvn: data to use "
                f"{json_dir / 'cmvn.ark'}"
            )
    else:
        _set_cmvn(model, json_dir / "cmvn.ark")
        notes.append(f"CMVN replaced by {json_dir / 'cmvn.ark'} (train_config.cmvn: data)")
    return ModelSetup(
        model=model,
        config=cfg,
        units=units,
        feature_config=data_fc,
        base_epoch=int(payload.get("epoch", 0)),
        base_step=int(payload.get("step", 0)),
        base_path=str(base_path),
        base_opti_config=dict(base_cfg.get("opti_config") or {}) or None,
        notes=notes,
    )


def setup_from_scratch(
    cfg: dict[str, Any],
    units_path: Path,
    cmvn_path: Path,
    feature_config_path: Path,
    data_dim: int,
    json_dir: Path,
) -> ModelSetup:
    cfg = copy.deepcopy(cfg)
    units = read_units(units_path)
    data_units_path = json_dir / "units.txt"
    if data_units_path.exists():
        _units_change(units, read_units(data_units_path), str(data_units_path), str(units_path))
    fc = _load_feature_yaml(feature_config_path)
    if int(fc["dim"]) != data_dim:
        raise MismatchError(
            f"{feature_config_path}: dim {fc['dim']} but the json features have dim {data_dim}"
        )
    notes = set_units_dims(cfg, data_dim, len(units))
    model = build_model(cfg["model_config"], cfg["criterion_config"])
    _set_cmvn(model, cmvn_path)
    return ModelSetup(model=model, config=cfg, units=units, feature_config=fc, notes=notes)


def build_setup(
    cfg: dict[str, Any],
    json_dir: Path,
    data_dim: int,
    base_model: Path | None = None,
    units: Path | None = None,
    cmvn: Path | None = None,
    feature_config: Path | None = None,
) -> ModelSetup:
    """The model to train: from ``base_model``, or from scratch with units/CMVN/features."""
    if base_model is not None:
        if base_model.is_dir():
            raise TrainError(f"--base-model {base_model}: is a directory; give its checkpoint.N")
        if not base_model.is_file():
            raise TrainError(f"--base-model {base_model}: no such file")
        setup = setup_from_base(cfg, base_model, json_dir, data_dim)
    else:
        given = {"units": units, "cmvn": cmvn, "feature_config": feature_config}
        missing = [n for n, v in given.items() if v is None]
        if missing:
            raise TrainError(
                "no --base-model: training from scratch needs "
                + " ".join(f"--{m.replace('_', '-')}" for m in missing)
            )
        assert units is not None and cmvn is not None and feature_config is not None
        setup = setup_from_scratch(cfg, units, cmvn, feature_config, data_dim, json_dir)
    for note in setup.notes:
        log.warning(note)
    return setup


def prepare_model(setup: ModelSetup, device: torch.device) -> tuple[torch.nn.Module, list[str]]:
    """The model on ``device`` with LoRA adapters (``train_config.lora``) and
    ``train_config.freeze`` applied; returns it and the frozen parameter names. The optimizer is
    built from what is trainable after this.

    LoRA wraps the chosen Linear layers once the weights are final (base loaded, units grown,
    CMVN set) and freezes every other parameter; ``freeze`` then applies to what is left (the
    adapters), with the same prefixes as without LoRA."""
    model = setup.model.to(device)
    lora_cfg = setup.config["train_config"]["lora"]
    if lora.enabled(lora_cfg):
        try:
            targets = lora.apply_lora(model, lora_cfg)
        except lora.LoraError as exc:
            raise TrainError(str(exc)) from exc
        log.info(
            "LoRA: rank %d, alpha %g, dropout %g on %d Linear layers; the rest is frozen",
            lora_cfg["rank"],
            lora_cfg["alpha"],
            lora_cfg["dropout"],
            len(targets),
        )
    frozen = apply_freeze(model, setup.config["train_config"]["freeze"])
    n_train, n_total = lora.count_parameters(model)
    log.info("trainable parameters: %d of %d (%.1f%%)", n_train, n_total, 100.0 * n_train / n_total)
    return model, frozen
