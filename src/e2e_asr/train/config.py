"""Training configuration: load, normalise and validate the seed-compatible yaml.

Two layouts are accepted (see ``/work/shared/seeds/ce_espnet_baseline_fintune.yaml``):

* the seed's, where ``jconfig`` and ``trans_config`` sit under ``set_config`` next to
  ``data_type`` and ``load``;
* a flat one, where ``jconfig``/``trans_config`` (and optionally ``data_type``/``load``) are at
  the top level.

Both normalise to one dict with the sections ``jconfig trans_config opti_config
criterion_config model_config train_config valid_config decode_config data_config``; every
section is filled with defaults, so the trainer never has to guess. An unknown key anywhere is
an error that names the key, the section and the file, because a silently ignored typo in a
training config costs a whole run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from e2e_asr.data.specaug import TIME_WARP_MODES
from e2e_asr.decode.config import DecodeConfig, DecodeConfigError
from e2e_asr.model.config import CriterionConfig, ModelConfig
from e2e_asr.train.lora import LoraError, validate_lora
from e2e_asr.train.precision import PrecisionError, normalize_amp


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the file, section and key."""


# The seed system's optimizer class name and the schedules we implement.
OPTIMIZER_NAMES = {
    "eteh.models.pytorch_backend.optimizer.optimizer:Noam": "noam",
    "noam": "noam",
    "warmup_decay": "warmup_decay",
}
SECTIONS = (
    "jconfig",
    "trans_config",
    "opti_config",
    "criterion_config",
    "model_config",
    "train_config",
    "valid_config",
    "decode_config",
    "data_config",
)

JCONFIG_DEFAULTS: dict[str, Any] = {
    "batch_size": 16,
    "max_length_in": 512,
    "max_length_out": 150,
    "num_batches": 0,
    "min_batch_size": 1,
    "shortest_first": True,
    "batch_sort_key": "input",
    "swap_io": False,
    "count": "seq",
    "batch_bins": 100000,
    "batch_frames_in": 0,
    "batch_frames_out": 0,
    "batch_frames_inout": 0,
    "clean_data": True,
    "down_sample": 2,
    "ilen_max": 2000,
    "ilen_min": 17,
    "olen_max": 100,
}
# The seed's valid_config spells one key without the "s"; it means the same thing.
JCONFIG_ALIASES = {"batch_frame_in": "batch_frames_in"}

DATA_DEFAULTS: dict[str, Any] = {"data_type": "json", "load": False}

OPTI_DEFAULTS: dict[str, Any] = {
    "name": "noam",
    # noam
    "factor": 1.0,
    "warm_step": 25000,
    "model_size": 256,
    # warmup_decay: linear warmup to ``lr`` then ``decay`` (inverse_sqrt | linear | constant)
    "lr": 1e-3,
    "decay": "inverse_sqrt",
    "decay_steps": 0,
    "final_lr": 0.0,
    # Adam (the seed's Noam uses betas 0.9/0.98, eps 1e-9)
    "betas": [0.9, 0.98],
    "eps": 1e-9,
    "weight_decay": 0.0,
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "char_num": None,  # seed key: number of output units, checked against the model
    "accum_grad": 1,
    "amp": "auto",  # auto | bf16 | fp16 | off (seed: True = auto, False = off); precision.py
    "grad_clip": 5.0,
    "log_interval": 100,  # optimizer updates between log lines
    "snapshot_interval": 1000,  # optimizer updates between resumable snapshots; 0 = off
    "seed": 1,
    "freeze": [],  # module-name prefixes whose parameters are not trained
    "lr_scales": {},  # module-name prefix -> lr multiplier
    "keep_last": 0,  # keep only the newest N checkpoint.N files; 0 keeps all
    "cmvn": "base",  # base: keep the base model's CMVN; data: use the json dir's cmvn.ark
    "noam_restart": False,  # True: the LR schedule starts at step 0 instead of the base's step
    "num_workers": 2,  # DataLoader worker processes for feature loading
    "ddp_pad": "repeat",  # equal batches per rank: repeat the first batches, or drop the tail
    "ddp_timeout": 600,  # seconds a collective may wait before the process group gives up
    "dev_cer": True,  # CTC greedy CER on dev each epoch
    "compile": False,  # torch.compile the encoder/decoder blocks (faster steps, slow start)
    "oom_probe": "auto",  # forward+backward of the largest batch first: auto (GPU) | true | false
    "lora": {},  # low-rank adapters: {rank, alpha, dropout, target_modules}; see train/lora.py
}


TRANS_KEYS: dict[str, dict[str, Any]] = {
    "time_warp": {"max_time_warp": 5, "inplace": True, "mode": "PIL", "prob": 1.0},
    "freq_mask": {"F": 30, "n_mask": 2, "inplace": True, "replace_with_zero": False, "prob": 1.0},
    "time_mask": {"T": 40, "n_mask": 2, "inplace": True, "replace_with_zero": False, "prob": 1.0},
    "spec_sub": {"max_t": 30, "num_t_sub": 3, "prob": 1.0},
}

_BOOL_KEYS = {
    "shortest_first",
    "swap_io",
    "clean_data",
    "noam_restart",
    "dev_cer",
    "load",
    "compile",
}


def _fill(section: str, given: Any, defaults: dict[str, Any], src: str) -> dict[str, Any]:
    """Defaults overlaid with ``given``; unknown keys and wrong types are errors."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(
            f"{src}: section '{section}' must be a mapping, got {type(given).__name__}"
        )
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{src}: unknown key '{key}' in section '{section}' (known: {known})")
        default = defaults[key]
        if key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ConfigError(f"{src}: '{section}.{key}' must be true/false, got {value!r}")
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{src}: '{section}.{key}' must be true/false, got {value!r}")
        elif isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{src}: '{section}.{key}' must be a number, got {value!r}")
            if (
                isinstance(default, int)
                and not isinstance(default, bool)
                and isinstance(value, float)
            ):
                if not value.is_integer():
                    raise ConfigError(f"{src}: '{section}.{key}' must be an integer, got {value!r}")
                value = int(value)
        out[key] = value
    return out


def _jconfig(given: Any, section: str, src: str) -> dict[str, Any]:
    if isinstance(given, dict):
        given = dict(given)
        for alias, key in JCONFIG_ALIASES.items():
            if alias in given:
                if key in given and given[key] != given[alias]:
                    raise ConfigError(
                        f"{src}: '{section}' sets both '{alias}' and '{key}' to different values"
                    )
                given[key] = given.pop(alias)
    out = _fill(section, given, JCONFIG_DEFAULTS, src)
    if out["count"] not in ("auto", "seq", "bin", "frame"):
        raise ConfigError(
            f"{src}: '{section}.count' must be auto|seq|bin|frame, got {out['count']!r}"
        )
    if out["batch_sort_key"] not in ("input", "output", "shuffle"):
        raise ConfigError(
            f"{src}: '{section}.batch_sort_key' must be input|output|shuffle, "
            f"got {out['batch_sort_key']!r}"
        )
    if out["min_batch_size"] < 1:
        raise ConfigError(f"{src}: '{section}.min_batch_size' must be >= 1")
    return out


def _trans(given: Any, src: str) -> list[dict[str, Any]]:
    if given is None:
        return []
    if not isinstance(given, list):
        raise ConfigError(f"{src}: 'trans_config' must be a list of transforms")
    out = []
    for i, item in enumerate(given):
        section = f"trans_config[{i}]"
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(f"{src}: '{section}' needs a 'type' key")
        kind = item["type"]
        if kind not in TRANS_KEYS:
            raise ConfigError(
                f"{src}: '{section}.type' {kind!r} unknown (known: {', '.join(TRANS_KEYS)})"
            )
        rest = {k: v for k, v in item.items() if k != "type"}
        filled = _fill(section, rest, TRANS_KEYS[kind], src)
        if not 0.0 <= float(filled["prob"]) <= 1.0:
            raise ConfigError(f"{src}: '{section}.prob' must be in [0, 1]")
        if kind == "time_warp" and filled["mode"] not in TIME_WARP_MODES:
            raise ConfigError(
                f"{src}: '{section}.mode' {filled['mode']!r} unknown "
                f"(known: {', '.join(TIME_WARP_MODES)})"
            )
        out.append({"type": kind, **filled})
    return out


def _rename(section: str, cfg: dict[str, Any], names: dict[str, str], src: str) -> None:
    name = cfg.get("name")
    if name not in names:
        raise ConfigError(
            f"{src}: '{section}.name' {name!r} unknown (known: {', '.join(sorted(names))})"
        )
    cfg["name"] = names[name]


def _train(given: Any, src: str) -> dict[str, Any]:
    out = _fill("train_config", given, TRAIN_DEFAULTS, src)
    if out["accum_grad"] < 1:
        raise ConfigError(f"{src}: 'train_config.accum_grad' must be >= 1")
    if out["cmvn"] not in ("base", "data"):
        raise ConfigError(f"{src}: 'train_config.cmvn' must be base|data, got {out['cmvn']!r}")
    if out["ddp_pad"] not in ("repeat", "drop"):
        raise ConfigError(f"{src}: 'train_config.ddp_pad' must be repeat|drop")
    try:
        out["amp"] = normalize_amp(out["amp"])
    except PrecisionError as exc:
        raise ConfigError(f"{src}: {exc}") from exc
    if out["oom_probe"] not in ("auto", True, False):
        raise ConfigError(f"{src}: 'train_config.oom_probe' must be auto|true|false")
    if not isinstance(out["freeze"], list) or not all(isinstance(p, str) for p in out["freeze"]):
        raise ConfigError(f"{src}: 'train_config.freeze' must be a list of module-name prefixes")
    scales = out["lr_scales"]
    if not isinstance(scales, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for k, v in scales.items()
    ):
        raise ConfigError(
            f"{src}: 'train_config.lr_scales' must map module-name prefixes to numbers >= 0"
        )
    try:
        out["lora"] = validate_lora(out["lora"], src)
    except LoraError as exc:
        raise ConfigError(str(exc)) from exc
    return out


def _opti(given: Any, src: str) -> dict[str, Any]:
    # lr: auto = a fraction of the base model's peak LR (train/schedule_info.py)
    auto_lr = isinstance(given, dict) and given.get("lr") == "auto"
    if auto_lr:
        given = {k: v for k, v in given.items() if k != "lr"}
    out = _fill("opti_config", given, OPTI_DEFAULTS, src)
    if auto_lr:
        out["lr"] = "auto"
    _rename("opti_config", out, OPTIMIZER_NAMES, src)
    if out["decay"] not in ("inverse_sqrt", "linear", "constant"):
        raise ConfigError(f"{src}: 'opti_config.decay' must be inverse_sqrt|linear|constant")
    if out["decay"] == "linear" and out["decay_steps"] <= 0:
        raise ConfigError(f"{src}: 'opti_config.decay: linear' needs decay_steps > 0")
    if out["warm_step"] < 0:
        raise ConfigError(f"{src}: 'opti_config.warm_step' must be >= 0")
    if out["name"] == "noam" and out["warm_step"] == 0:
        raise ConfigError(f"{src}: 'opti_config.warm_step' must be > 0 for noam")
    betas = out["betas"]
    if not (isinstance(betas, list | tuple) and len(betas) == 2):
        raise ConfigError(f"{src}: 'opti_config.betas' must be two numbers")
    out["betas"] = [float(b) for b in betas]
    return out


def _model_and_criterion(
    model: Any, criterion: Any, src: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validated by the model package's own config classes (they own those keys and the
    mapping of the seed's ``eteh...`` class names)."""
    if not isinstance(model, dict):
        raise ConfigError(f"{src}: section 'model_config' is missing or not a mapping")
    if criterion is None:
        criterion = {}
    if not isinstance(criterion, dict):
        raise ConfigError(f"{src}: section 'criterion_config' must be a mapping")
    try:
        m = ModelConfig.from_dict(dict(model)).to_dict()
        c = CriterionConfig.from_dict(dict(criterion)).to_dict()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{src}: {exc}") from exc
    if c["size"] is not None and c["size"] != m["odim"]:
        raise ConfigError(
            f"{src}: criterion_config.size {c['size']} != model_config.odim {m['odim']}"
        )
    return m, c


def _decode(given: Any, src: str) -> dict[str, Any]:
    """The decode package owns these keys (seed keys plus mode, penalty, maxlenratio, ...)."""
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"{src}: section 'decode_config' must be a mapping")
    given = dict(given or {})
    # accepted for configs written by earlier versions; decoding returns the 1-best only
    nbest = given.pop("nbest", 1)
    if nbest != 1:
        raise ConfigError(f"{src}: decode_config.nbest {nbest!r}: only the 1-best is produced")
    try:
        return DecodeConfig.from_dict(given, f"{src} decode_config").to_dict()
    except DecodeConfigError as exc:
        raise ConfigError(str(exc)) from exc


def normalize_config(raw: Any, src: str = "<config>") -> dict[str, Any]:
    """Normalise an already-parsed config mapping (see module docstring)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: top level must be a mapping")
    raw = dict(raw)
    set_cfg = raw.pop("set_config", None)
    nested: dict[str, Any] = {}
    if set_cfg is not None:
        if not isinstance(set_cfg, dict):
            raise ConfigError(f"{src}: 'set_config' must be a mapping")
        for key in set_cfg:
            if key not in ("jconfig", "trans_config", "data_type", "load"):
                raise ConfigError(
                    f"{src}: unknown key '{key}' in section 'set_config' "
                    "(known: data_type, jconfig, load, trans_config)"
                )
        nested = dict(set_cfg)
    for key in ("jconfig", "trans_config", "data_type", "load"):
        if key in raw:
            if key in nested:
                raise ConfigError(f"{src}: '{key}' given both at the top level and in set_config")
            nested[key] = raw.pop(key)
    allowed_top = {s for s in SECTIONS if s not in ("jconfig", "trans_config", "data_config")}
    for key in raw:
        if key not in allowed_top:
            raise ConfigError(
                f"{src}: unknown top-level key '{key}' (known: set_config, data_type, load, "
                f"{', '.join(sorted(allowed_top | {'jconfig', 'trans_config'}))})"
            )
    data = _fill(
        "data_config",
        {k: nested[k] for k in ("data_type", "load") if k in nested},
        DATA_DEFAULTS,
        src,
    )
    if data["data_type"] != "json":
        raise ConfigError(f"{src}: data_type must be 'json', got {data['data_type']!r}")
    model, crit = _model_and_criterion(raw.get("model_config"), raw.get("criterion_config"), src)
    valid_raw = raw.get("valid_config") or {}
    if not isinstance(valid_raw, dict):
        raise ConfigError(f"{src}: section 'valid_config' must be a mapping")
    for key in valid_raw:
        if key not in ("data_type", "jconfig"):
            raise ConfigError(
                f"{src}: unknown key '{key}' in section 'valid_config' (known: data_type, jconfig)"
            )
    if valid_raw.get("data_type", "json") != "json":
        raise ConfigError(f"{src}: valid_config.data_type must be 'json'")
    jconfig = _jconfig(nested.get("jconfig"), "jconfig", src)
    valid_j = _jconfig(valid_raw.get("jconfig", nested.get("jconfig")), "valid_config.jconfig", src)
    cfg: dict[str, Any] = {
        "jconfig": jconfig,
        "trans_config": _trans(nested.get("trans_config"), src),
        "opti_config": _opti(raw.get("opti_config"), src),
        "criterion_config": crit,
        "model_config": model,
        "train_config": _train(raw.get("train_config"), src),
        "valid_config": {"data_type": "json", "jconfig": valid_j},
        "decode_config": _decode(raw.get("decode_config"), src),
        "data_config": data,
    }
    odim = model.get("odim")
    for section in ("train_config", "decode_config"):
        char_num = cfg[section]["char_num"]
        if char_num is not None and odim is not None and char_num != odim:
            raise ConfigError(f"{src}: {section}.char_num {char_num} != model_config.odim {odim}")
    return cfg


def load_train_config(path: str | Path) -> dict[str, Any]:
    """Read a training yaml (safe loader) and return the normalised config dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read training config: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return normalize_config(raw, str(path))


def set_units_dims(cfg: dict[str, Any], idim: int, odim: int) -> list[str]:
    """Make every dimension field agree with the data (training from scratch).

    Returns human-readable notes for the keys that changed, so the caller can log them.
    """
    notes = []
    fields = [
        ("model_config", "idim", idim),
        ("model_config", "odim", odim),
        ("criterion_config", "size", odim),
        ("train_config", "char_num", odim),
        ("decode_config", "char_num", odim),
    ]
    for section, key, value in fields:
        old = cfg[section].get(key)
        if old != value:
            if old is not None:
                notes.append(f"{section}.{key}: {old} -> {value} (from the data)")
            cfg[section][key] = value
    return notes


def apply_overrides(
    cfg: dict[str, Any], overrides: list[str], src: str = "--set"
) -> dict[str, Any]:
    """``section.key=value`` overrides (value parsed as YAML), re-validated as a whole.

    ``jconfig.batch_size=32``, ``opti_config.factor=0.1``, ``train_config.freeze=[encoder]``.
    """
    raw: dict[str, Any] = copy.deepcopy({k: v for k, v in cfg.items() if k != "data_config"})
    raw.update(cfg.get("data_config", {}))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"{src}: expected section.key=value, got {item!r}")
        dotted, text = item.split("=", 1)
        section, key = dotted.split(".", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{src} {item!r}: value is not valid YAML ({exc})") from exc
        target = raw.get(section)
        if section == "valid_config" and key.startswith("jconfig."):
            target, key = raw["valid_config"]["jconfig"], key.split(".", 1)[1]
        if not isinstance(target, dict):
            raise ConfigError(f"{src} {item!r}: unknown section '{section}'")
        target[key] = value
    return normalize_config(raw, src)
