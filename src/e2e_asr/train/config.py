"""Training configuration: load, normalise and validate the seed-compatible yaml.

Two layouts are accepted (see the seed file, kept as ``tests/data/seed_finetune.yaml``):

* the seed's, where ``jconfig`` and ``trans_config`` sit under ``set_config`` next to
  ``data_type`` and ``load``;
* a flat one, where ``jconfig``/``trans_config`` (and optionally ``data_type``/``load``) are at
  the top level.

Both normalise to one dict with the sections ``jconfig trans_config opti_config
criterion_config model_config train_config valid_config decode_config data_config``; every
section is filled with defaults, so the trainer never has to guess. Each section is a dataclass
read with the project's one validation mechanism, ``e2e_asr.data.schema.parse_section``: an
unknown key, a value of the wrong type or a broken rule is an error that names the file, the
section and the key, because a silently ignored typo in a training config costs a whole run.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from e2e_asr.data.batching import JCONFIG_ALIASES, JConfig
from e2e_asr.data.schema import Fail, SchemaError, parse_section, to_dict
from e2e_asr.data.specaug import TIME_WARP_MODES
from e2e_asr.decode.config import DecodeConfig
from e2e_asr.model.config import CriterionConfig, ModelConfig
from e2e_asr.train.lora import LoraSection
from e2e_asr.train.precision import PrecisionError, normalize_amp


class ConfigError(SchemaError):
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


JCONFIG_DEFAULTS: dict[str, Any] = to_dict(JConfig())


@dataclass
class TopLevel:
    """The top level of a training yaml: the seed's sections (each read by its own class
    below), with ``jconfig``/``trans_config``/``data_type``/``load`` either here (flat
    layout) or under ``set_config`` (the seed's layout)."""

    set_config: dict[str, Any] | None = None
    jconfig: Any = None
    trans_config: Any = None
    data_type: Any = None
    load: Any = None
    opti_config: Any = None
    criterion_config: Any = None
    model_config: Any = None
    train_config: Any = None
    valid_config: dict[str, Any] | None = None
    decode_config: Any = None


@dataclass
class SetConfig:
    jconfig: Any = None
    trans_config: Any = None
    data_type: Any = None
    load: Any = None


@dataclass
class ValidSection:
    data_type: Literal["json"] = "json"
    jconfig: Any = None


@dataclass
class DataSection:
    data_type: Literal["json"] = "json"
    load: bool = False


@dataclass
class OptiSection:
    name: str = "noam"
    # noam
    factor: float = 1.0
    warm_step: int = 25000
    model_size: int = 256
    # warmup_decay: linear warmup to ``lr`` then ``decay`` (inverse_sqrt | linear | constant)
    lr: float | Literal["auto"] = 1e-3  # auto: a fraction of the base model's peak LR
    decay: Literal["inverse_sqrt", "linear", "constant"] = "inverse_sqrt"
    decay_steps: int = 0
    final_lr: float = 0.0
    # Adam (the seed's Noam uses betas 0.9/0.98, eps 1e-9)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-9
    weight_decay: float = 0.0

    def check(self, fail: Fail) -> None:
        if self.name not in OPTIMIZER_NAMES:
            fail("name", f"{self.name!r} unknown (known: {', '.join(sorted(OPTIMIZER_NAMES))})")
        self.name = OPTIMIZER_NAMES[self.name]
        if self.decay == "linear" and self.decay_steps <= 0:
            fail("decay", "linear needs decay_steps > 0")
        if self.warm_step < 0:
            fail("warm_step", "must be >= 0")
        if self.name == "noam" and self.warm_step == 0:
            fail("warm_step", "must be > 0 for noam")
        if len(self.betas) != 2:
            fail("betas", "must be two numbers")


@dataclass
class TrainSection:
    char_num: int | None = None  # seed key: number of output units, checked against the model
    accum_grad: int = 1
    # auto | bf16 | fp16 | off (seed: true = auto, false = off); see train/precision.py
    amp: bool | str | None = "auto"
    grad_clip: float = 5.0
    log_interval: int = 100  # optimizer updates between log lines
    snapshot_interval: int = 1000  # optimizer updates between resumable snapshots; 0 = off
    seed: int = 1
    freeze: list[str] = field(default_factory=list)  # module-name prefixes not trained
    lr_scales: dict[str, float] = field(default_factory=dict)  # module prefix -> lr multiplier
    keep_last: int = 0  # keep only the newest N checkpoint.N files; 0 keeps all
    cmvn: Literal["base", "data"] = "base"  # base: the base model's CMVN; data: cmvn.ark
    noam_restart: bool = False  # True: the LR schedule starts at step 0, not the base's step
    num_workers: int = 2  # DataLoader worker processes for feature loading
    ddp_pad: Literal["repeat", "drop"] = "repeat"  # equal batches per rank
    ddp_timeout: int = 600  # seconds a collective may wait before the process group gives up
    dev_cer: bool = True  # CTC greedy CER on dev each epoch
    compile: bool = False  # torch.compile the encoder/decoder blocks (faster steps, slow start)
    # forward+backward of the largest batch first: auto (GPU) | true | false
    oom_probe: bool | Literal["auto"] = "auto"
    # low-rank adapters: {rank, alpha, dropout, target_modules}; see train/lora.py
    # (read as a LoraSection, kept as its plain dict so checkpoints hold plain data)
    lora: LoraSection | None = field(default_factory=LoraSection)

    def check(self, fail: Fail) -> None:
        if self.accum_grad < 1:
            fail("accum_grad", "must be >= 1")
        try:
            self.amp = normalize_amp(self.amp)
        except PrecisionError:
            fail("amp", f"must be auto|bf16|fp16|off (or true/false), got {self.amp!r}")
        self.lora = dataclasses.asdict(self.lora or LoraSection())
        if any(v < 0 for v in self.lr_scales.values()):
            fail("lr_scales", "must map module-name prefixes to numbers >= 0")


@dataclass
class _Transform:
    prob: float = 1.0

    def check(self, fail: Fail) -> None:
        if not 0.0 <= self.prob <= 1.0:
            fail("prob", "must be in [0, 1]")


@dataclass
class TimeWarp(_Transform):
    max_time_warp: int = 5
    inplace: bool = True
    mode: str = "PIL"

    def check(self, fail: Fail) -> None:
        super().check(fail)
        if self.mode not in TIME_WARP_MODES:
            fail("mode", f"{self.mode!r} unknown (known: {', '.join(TIME_WARP_MODES)})")


@dataclass
class _Mask(_Transform):
    n_mask: int = 2
    inplace: bool = True
    replace_with_zero: bool = False


@dataclass
class FreqMask(_Mask):
    F: int = 30  # noqa: N815 (the seed's key)


@dataclass
class TimeMask(_Mask):
    T: int = 40  # noqa: N815 (the seed's key)


@dataclass
class SpecSub(_Transform):
    max_t: int = 30
    num_t_sub: int = 3


TRANSFORMS: dict[str, type] = {
    "time_warp": TimeWarp,
    "freq_mask": FreqMask,
    "time_mask": TimeMask,
    "spec_sub": SpecSub,
}


def _section(cls: type, given: Any, section: str, src: str, aliases=None) -> dict[str, Any]:
    return to_dict(parse_section(cls, given, section, src, aliases, error=ConfigError))


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
        if kind not in TRANSFORMS:
            raise ConfigError(
                f"{src}: '{section}.type' {kind!r} unknown (known: {', '.join(TRANSFORMS)})"
            )
        rest = {k: v for k, v in item.items() if k != "type"}
        out.append({"type": kind, **_section(TRANSFORMS[kind], rest, section, src)})
    return out


def _model_and_criterion(
    model: Any, criterion: Any, src: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validated by the model package's own config classes (they own those keys and the
    mapping of the seed's ``eteh...`` class names)."""
    if not isinstance(model, dict):
        raise ConfigError(f"{src}: section 'model_config' is missing or not a mapping")
    try:
        m = ModelConfig.from_dict(model, src).to_dict()
        c = CriterionConfig.from_dict(criterion, src).to_dict()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
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
        return DecodeConfig.from_dict(given, src, "decode_config").to_dict()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def normalize_config(raw: Any, src: str = "<config>") -> dict[str, Any]:
    """Normalise an already-parsed config mapping (see module docstring)."""
    top = parse_section(TopLevel, raw, "top-level", src, error=ConfigError)
    given = {k: v for k, v in vars(top).items() if k in raw}  # keys the file really has
    nested = {
        k: v
        for k, v in vars(
            parse_section(SetConfig, top.set_config, "set_config", src, error=ConfigError)
        ).items()
        if k in (top.set_config or {})
    }
    for key in ("jconfig", "trans_config", "data_type", "load"):
        if key in given:
            if key in nested:
                raise ConfigError(f"{src}: '{key}' given both at the top level and in set_config")
            nested[key] = given[key]
    data_given = {k: nested[k] for k in ("data_type", "load") if k in nested}
    data = _section(DataSection, data_given, "data_config", src)
    model, crit = _model_and_criterion(top.model_config, top.criterion_config, src)
    valid = parse_section(ValidSection, top.valid_config, "valid_config", src, error=ConfigError)
    valid_given = top.valid_config or {}
    jconfig = _section(JConfig, nested.get("jconfig"), "jconfig", src, JCONFIG_ALIASES)
    valid_j = _section(
        JConfig,
        valid.jconfig if "jconfig" in valid_given else nested.get("jconfig"),
        "valid_config.jconfig",
        src,
        JCONFIG_ALIASES,
    )
    cfg: dict[str, Any] = {
        "jconfig": jconfig,
        "trans_config": _trans(nested.get("trans_config"), src),
        "opti_config": _section(OptiSection, top.opti_config, "opti_config", src),
        "criterion_config": crit,
        "model_config": model,
        "train_config": _section(TrainSection, top.train_config, "train_config", src),
        "valid_config": {"data_type": "json", "jconfig": valid_j},
        "decode_config": _decode(top.decode_config, src),
        "data_config": data,
    }
    odim = model.get("odim")
    for section in ("train_config", "decode_config"):
        char_num = cfg[section]["char_num"]
        if char_num is not None and odim is not None and char_num != odim:
            raise ConfigError(f"{src}: {section}.char_num {char_num} != model_config.odim {odim}")
    return cfg


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a training yaml (safe loader) and return the normalised config dict, with the
    ``section.key=value`` ``overrides`` (``--set``) applied once and validated with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read training config: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    cfg = normalize_config(raw, str(path))
    return apply_overrides(cfg, list(overrides), f"{path} --set") if overrides else cfg


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
