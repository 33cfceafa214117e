"""LoRA fine-tuning: low-rank adapters on chosen ``nn.Linear`` layers, merged into plain weights.

``train_config.lora`` (rank 0 = off)::

    lora: {rank: 8, alpha: 16, dropout: 0.0,
           target_modules: [linear_q, linear_k, linear_v, linear_out, w_1, w_2]}

Each adapted layer ``y = W x + b`` becomes ``y = W x + b + (alpha / rank) * B A dropout(x)``
with ``A`` [rank, in] and ``B`` [out, rank]; ``A`` starts like a Linear's weight (Kaiming
uniform) and ``B`` at zero, so the wrapped model equals the base model before the first update.
The layers are wrapped after the base weights are loaded (``apply_lora``); then every parameter
except the adapters' is frozen.

``target_modules`` entries name ``nn.Linear`` modules of the model: an entry without ``*``
matches a module whose full name equals it or ends with ``.<entry>`` (``linear_q`` = every
attention query projection, ``decoder.output_layer`` = that one layer); an entry with ``*`` is
a glob over the full name (``encoder.*`` = every Linear of the encoder). An entry that matches
no Linear is an error naming it, as for ``freeze``.

A wrapped layer (``LoraLinear``) keeps its ``weight``/``bias`` under their old names and adds
``lora_A``/``lora_B``, so ``freeze`` and ``lr_scales`` prefixes mean what they meant before.

Checkpoints of a LoRA run hold, under ``model``, the MERGED weights with the ordinary ESPnet
names (``W + (alpha / rank) B A``, see ``merge_lora``): averaging, export, ONNX, int8 and every
decoder read them unchanged. The ``lora`` entry adds what resuming needs, as plain tensors
(``weights_only`` loading): rank/alpha/dropout, the adapted modules, the adapters
``<module>.lora_A`` / ``<module>.lora_B`` and the unmerged ``<module>.weight`` of each adapted
layer (``base``); ``load_lora_payload`` restores the wrapped model from them bit for bit.

Averaging uses the merged weights of each checkpoint: the mean of ``W + s B_i A_i`` is
``W + s mean(B_i A_i)``, the average of the epochs' models, as for full fine-tuning. Averaging
the adapters and merging after would give ``W + s mean(B_i) mean(A_i)``: a product of means is
not the mean of the products, so that is another model, not the average.

Why not ``peft``: it wraps this model correctly (checked: merged == wrapped within 5e-7), but
it pulls in transformers, accelerate, huggingface_hub, tokenizers, hf-xet, pydantic and 17 more
packages (~200 MB) and roughly doubles the import time, for the 30 lines below.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from e2e_asr.data.schema import Fail, parse_section

# The attention projections and feed-forward layers of every encoder and decoder block;
# not the CTC/decoder output layers (vocabulary-sized) nor the input embedding.
DEFAULT_TARGETS = ["linear_q", "linear_k", "linear_v", "linear_out", "w_1", "w_2"]


@dataclass
class LoraSection:
    """``train_config.lora``, read by the project's one schema mechanism."""

    rank: int = 0  # 0 = LoRA off
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapters' input
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def check(self, fail: Fail) -> None:
        if self.rank < 0:
            fail("rank", f"must be an integer >= 0, got {self.rank!r}")
        if self.alpha <= 0:
            fail("alpha", f"must be a number > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules or not all(self.target_modules):
            fail("target_modules", "must be a non-empty list of module names")


ADAPTER_SUFFIXES = (".lora_A", ".lora_B")


class LoraError(ValueError):
    """A LoRA setting or state that cannot be used; the message names it."""


def validate_lora(given: Any, where: str) -> dict[str, Any]:
    """``train_config.lora`` filled with defaults; wrong keys/values raise ``LoraError``."""
    section = parse_section(LoraSection, given, "train_config.lora", where, error=LoraError)
    return dataclasses.asdict(section)


def enabled(lora_cfg: dict[str, Any] | None) -> bool:
    """True when the (validated) ``train_config.lora`` asks for adapters."""
    return bool(lora_cfg) and int(lora_cfg.get("rank", 0)) > 0


class LoraLinear(nn.Linear):
    """``nn.Linear`` plus a low-rank update; ``weight``/``bias`` keep their names."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank = rank
        self.scaling = alpha / rank
        dd = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **dd))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **dd))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's own weight
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}"


def _entry_matches(name: str, entry: str) -> bool:
    if "*" in entry:
        return fnmatch.fnmatchcase(name, entry)
    return name == entry or name.endswith("." + entry)


def resolve_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    """Full names of the ``nn.Linear`` modules that ``patterns`` select, in model order."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for entry in patterns:
        if not any(_entry_matches(n, entry) for n in linears):
            ends = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in linears}))
            raise LoraError(
                f"train_config.lora.target_modules: '{entry}' matches no nn.Linear of the model "
                f"(Linear layer names end with: {ends})"
            )
    return [n for n in linears if any(_entry_matches(n, e) for e in patterns)]


def scaling(lora_cfg: dict[str, Any]) -> float:
    return float(lora_cfg["alpha"]) / int(lora_cfg["rank"])


def apply_lora(model: nn.Module, lora_cfg: dict[str, Any]) -> list[str]:
    """Wrap the target layers of ``model`` in place and freeze every other parameter.

    Call after the base weights (and any vocabulary growth or CMVN) are in the model. ``A`` is
    drawn from torch's global RNG (seed it first for reproducible runs). Returns the wrapped
    modules' names.
    """
    if not enabled(lora_cfg):
        raise LoraError("apply_lora: train_config.lora.rank is 0 (LoRA off)")
    if lora_layers(model):
        raise LoraError("the model already carries LoRA adapters")
    targets = resolve_targets(model, lora_cfg["target_modules"])
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        wrapped = LoraLinear(
            base, int(lora_cfg["rank"]), float(lora_cfg["alpha"]), float(lora_cfg["dropout"])
        )
        wrapped.train(base.training)
        setattr(parent, child, wrapped)
    for pname, param in model.named_parameters():
        param.requires_grad_(pname.endswith(ADAPTER_SUFFIXES))
    return targets


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """``{module name: layer}`` of the wrapped layers (empty for a plain model)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def split_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(unmerged plain state with ESPnet names, adapters ``<module>.lora_A|lora_B``)."""
    plain: dict[str, torch.Tensor] = {}
    adapters: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        (adapters if key.endswith(ADAPTER_SUFFIXES) else plain)[key] = value.detach().clone()
    return plain, adapters


def merge_lora(
    state: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """Plain weights with the adapters folded in: ``<m>.weight + scale * B @ A``.

    ``state`` has ESPnet names (unmerged, not modified), ``adapters`` holds ``<m>.lora_A``
    [r, in] and ``<m>.lora_B`` [out, r]. The product is computed in float32 (float64 for
    float64 weights) and cast to the weight's dtype.
    """
    out = dict(state)
    for m in sorted({k.rsplit(".", 1)[0] for k in adapters}):
        a, b, key = adapters.get(f"{m}.lora_A"), adapters.get(f"{m}.lora_B"), f"{m}.weight"
        if a is None or b is None:
            raise LoraError(f"adapter of {m}: needs both lora_A and lora_B")
        if key not in out:
            raise LoraError(f"adapter of {m}: the model has no {key}")
        w = out[key]
        if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise LoraError(
                f"adapter of {m}: B {tuple(b.shape)} @ A {tuple(a.shape)} does not fit "
                f"{key} {tuple(w.shape)}"
            )
        dt = torch.float64 if w.dtype == torch.float64 else torch.float32
        a, b = a.to(w.device, dt), b.to(w.device, dt)
        out[key] = (w.to(dt) + (b @ a) * scale).to(w.dtype)
    return out


def lora_payload(
    model: nn.Module, lora_cfg: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What a checkpoint of a LoRA run stores: (merged plain ``model`` state, ``lora`` entry)."""
    plain, adapters = split_state(model)
    modules = sorted(lora_layers(model))
    entry = {
        "rank": int(lora_cfg["rank"]),
        "alpha": float(lora_cfg["alpha"]),
        "dropout": float(lora_cfg["dropout"]),
        "modules": modules,
        "adapters": adapters,
        "base": {f"{m}.weight": plain[f"{m}.weight"] for m in modules},
    }
    return merge_lora(plain, adapters, scaling(lora_cfg)), entry


def merge_payload(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Plain merged weights of a checkpoint payload, recomputed from its ``lora`` entry
    (``base`` + adapters) when it has one, else its ``model`` as it is."""
    entry = payload.get("lora")
    if not entry:
        return payload["model"]
    plain = {**payload["model"], **entry["base"]}
    return merge_lora(plain, entry["adapters"], float(entry["alpha"]) / int(entry["rank"]))


def load_lora_payload(model: nn.Module, payload: dict[str, Any], where: str = "checkpoint") -> None:
    """Restore a wrapped ``model`` exactly from a payload written with ``lora_payload``.

    The unmerged weights come from ``lora.base``, the adapters from ``lora.adapters``, every
    other tensor from ``model``; the stored merged weights must equal base + adapters.
    """
    entry = payload.get("lora")
    if not isinstance(entry, dict):
        raise LoraError(f"{where}: holds no LoRA state (written without train_config.lora)")
    layers = lora_layers(model)
    if sorted(layers) != sorted(entry["modules"]):
        raise LoraError(
            f"{where}: LoRA on {len(entry['modules'])} layers, this run adapts {len(layers)} "
            "(train_config.lora.target_modules differs)"
        )
    ranks = {m.rank for m in layers.values()}
    if ranks != {int(entry["rank"])}:
        raise LoraError(f"{where}: LoRA rank {entry['rank']}, this run uses {sorted(ranks)}")
    model.load_state_dict({**payload["model"], **entry["base"], **entry["adapters"]})
    again = merge_payload(payload)
    for m in entry["modules"]:
        key = f"{m}.weight"
        stored = payload["model"][key]
        if not torch.allclose(again[key].to(stored.device), stored, rtol=1e-5, atol=1e-6):
            raise LoraError(f"{where}: {key} is not base + adapters (the file was altered)")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model`` (adapters included in both)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
