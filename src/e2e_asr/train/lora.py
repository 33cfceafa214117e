"""LoRA fine-tuning: low-rank adapters on chosen ``nn.Linear`` layers (``peft``), merged into
plain weights.

``train_config.lora`` (rank 0 = off)::

    lora: {rank: 8, alpha: 16, dropout: 0.0,
           target_modules: [linear_q, linear_k, linear_v, linear_out, w_1, w_2]}

The adapters are Hugging Face ``peft``'s LoRA layers, injected into our plain ``nn.Module`` with
``peft.inject_adapter_in_model`` (no ``PeftModel`` wrapper, no HF config: the model keeps its
class, its methods and its module names). Each adapted layer ``y = W x + b`` becomes
``y = W x + b + (alpha / rank) * B A dropout(x)`` with ``A`` [rank, in] (Kaiming uniform, as a
Linear's own weight) and ``B`` [out, rank] at zero, so the adapted model equals the base model
before the first update. The layers are adapted after the base weights are loaded
(``apply_lora``); peft then leaves only the adapters trainable. ``peft`` is imported only here,
only when ``rank > 0``: runs without LoRA do not load it.

``target_modules`` entries name ``nn.Linear`` modules of the model: an entry without ``*``
matches a module whose full name equals it or ends with ``.<entry>`` (``linear_q`` = every
attention query projection, ``decoder.output_layer`` = that one layer); an entry with ``*`` is
a glob over the full name (``encoder.*`` = every Linear of the encoder). An entry that matches
no Linear is an error naming it, as for ``freeze``. ``resolve_targets`` turns them into the
explicit list of full module names that peft is given.

An adapted layer ``<m>`` holds ``<m>.base_layer.weight|bias`` (frozen) and
``<m>.lora_A|lora_B.default.weight``; module names are unchanged, so ``freeze`` and ``lr_scales``
prefixes of modules mean what they meant before (``freeze: [decoder]`` freezes the decoder's
adapters).

Checkpoints of a LoRA run hold, under ``model``, the MERGED weights with the ordinary ESPnet
names (``W + (alpha / rank) B A``, peft's own ``get_delta_weight``, as its ``merge``):
averaging, export, ONNX, int8 and every decoder read them unchanged. The ``lora`` entry adds
what resuming needs, as plain tensors (``weights_only`` loading): rank/alpha/dropout, the
adapted modules, the adapters as ``peft.get_peft_model_state_dict`` gives them
(``<m>.lora_A.weight`` / ``<m>.lora_B.weight``) and the unmerged ``<m>.weight`` of each adapted
layer (``base``); ``load_lora_payload`` restores the adapter model from them bit for bit
(adapters through ``peft.set_peft_model_state_dict``).

Averaging uses the merged weights of each checkpoint: the mean of ``W + s B_i A_i`` is
``W + s mean(B_i A_i)``, the average of the epochs' models, as for full fine-tuning. Averaging
the adapters and merging after would give ``W + s mean(B_i) mean(A_i)``: a product of means is
not the mean of the products, so that is another model, not the average.

Cost of peft (measured on the 2-core build machine): peft 0.21.2 brings transformers,
accelerate, huggingface_hub, tokenizers, safetensors and ~20 small packages (~196 MB in the
venv, no other torch), and ``import peft`` takes several seconds; it is paid once per LoRA run.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

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


ADAPTER = "default"  # peft's adapter name; one adapter per model


class LoraError(ValueError):
    """A LoRA setting or state that cannot be used; the message names it."""


def validate_lora(given: Any, where: str) -> dict[str, Any]:
    """``train_config.lora`` filled with defaults; wrong keys/values raise ``LoraError``."""
    section = parse_section(LoraSection, given, "train_config.lora", where, error=LoraError)
    return dataclasses.asdict(section)


def enabled(lora_cfg: dict[str, Any] | None) -> bool:
    """True when the (validated) ``train_config.lora`` asks for adapters."""
    return bool(lora_cfg) and int(lora_cfg.get("rank", 0)) > 0


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


def _lora_layer_type() -> tuple[type, ...]:
    """peft's LoRA layer class, or nothing when peft was never imported (then no model can
    carry its layers, and a run without LoRA never imports it)."""
    if "peft" not in sys.modules:
        return ()
    from peft.tuners.lora import LoraLayer

    return (LoraLayer,)


def scaling(lora_cfg: dict[str, Any]) -> float:
    return float(lora_cfg["alpha"]) / int(lora_cfg["rank"])


def apply_lora(model: nn.Module, lora_cfg: dict[str, Any]) -> list[str]:
    """Adapt the target layers of ``model`` in place (peft) and freeze every other parameter.

    Call after the base weights (and any vocabulary growth or CMVN) are in the model. ``A`` is
    drawn from torch's global RNG (seed it first for reproducible runs). Returns the adapted
    modules' names.
    """
    if not enabled(lora_cfg):
        raise LoraError("apply_lora: train_config.lora.rank is 0 (LoRA off)")
    if lora_layers(model):
        raise LoraError("the model already carries LoRA adapters")
    targets = resolve_targets(model, lora_cfg["target_modules"])
    import peft  # here only: a run without LoRA never pays its import

    config = peft.LoraConfig(
        r=int(lora_cfg["rank"]),
        lora_alpha=float(lora_cfg["alpha"]),
        lora_dropout=float(lora_cfg["dropout"]),
        target_modules=targets,
        bias="none",
    )
    peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    adapted = sorted(lora_layers(model))
    if adapted != sorted(targets):  # peft matches names by suffix: make sure it took ours
        raise LoraError(f"peft adapted {len(adapted)} layers, {len(targets)} were selected")
    for pname, param in model.named_parameters():
        param.requires_grad_(_is_adapter_key(pname))
    return targets


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{module name: peft LoRA layer}`` of the adapted layers (empty for a plain model)."""
    kind = _lora_layer_type()
    if not kind:
        return {}
    return {n: m for n, m in model.named_modules() if isinstance(m, kind)}


def _is_adapter_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def _plain_name(key: str, adapted: set[str]) -> str | None:
    """The ESPnet name of a state-dict key of the adapted model (``<m>.base_layer.weight`` ->
    ``<m>.weight``), ``None`` for an adapter's tensor."""
    module, _, leaf = key.rpartition(".")
    head, _, last = module.rpartition(".")
    if last == "base_layer" and head in adapted:
        return f"{head}.{leaf}"
    if any(key.startswith(m + ".") for m in adapted):
        return None  # lora_A / lora_B (and any other adapter state) of an adapted layer
    return key


def merged_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(merged plain state with the ESPnet names, the unmerged weights of the adapted layers).

    The merge is peft's: ``<m>.weight = base_layer.weight + layer.get_delta_weight(adapter)``,
    what ``layer.merge()`` / ``merge_and_unload()`` add in place; here computed without
    touching the model (the training model stays unmerged).
    """
    layers = lora_layers(model)
    plain: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = _plain_name(key, set(layers))
        if name is not None:
            plain[name] = value.detach().clone()
    base: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, layer in layers.items():
            key = f"{name}.weight"
            base[key] = plain[key]
            plain[key] = (plain[key] + layer.get_delta_weight(ADAPTER)).detach()
    return plain, base


def lora_payload(
    model: nn.Module, lora_cfg: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What a checkpoint of a LoRA run stores: (merged plain ``model`` state, ``lora`` entry)."""
    from peft import get_peft_model_state_dict

    merged, base = merged_state(model)
    adapters = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    entry = {
        "rank": int(lora_cfg["rank"]),
        "alpha": float(lora_cfg["alpha"]),
        "dropout": float(lora_cfg["dropout"]),
        "modules": sorted(lora_layers(model)),
        "adapters": {k: v.detach().clone() for k, v in adapters.items()},
        "base": base,
    }
    return merged, entry


def load_lora_payload(model: nn.Module, payload: dict[str, Any], where: str = "checkpoint") -> None:
    """Restore an adapted ``model`` exactly from a payload written with ``lora_payload``.

    The unmerged weights come from ``lora.base``, the adapters from ``lora.adapters`` (through
    ``peft.set_peft_model_state_dict``), every other tensor from ``model``; the stored merged
    weights must equal base + adapters.
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
    ranks = {int(m.r[ADAPTER]) for m in layers.values()}
    if ranks != {int(entry["rank"])}:
        raise LoraError(f"{where}: LoRA rank {entry['rank']}, this run uses {sorted(ranks)}")
    from peft import set_peft_model_state_dict

    # the model's own tensors, by their adapted names, from the file's plain ones
    plain = {**payload["model"], **entry["base"]}
    state: dict[str, torch.Tensor] = {}
    for key in model.state_dict():
        name = _plain_name(key, set(layers))
        if name is not None:
            if name not in plain:
                raise LoraError(f"{where}: no {name}")
            state[key] = plain[name]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or not all(_is_adapter_key(k) for k in missing):
        raise LoraError(f"{where}: does not fit the model ({(unexpected + missing)[:3]} …)")
    # adapters: peft's names (<m>.lora_A.weight); files of the hand-written LoRA said <m>.lora_A
    adapters = {
        (f"{k}.weight" if k.endswith((".lora_A", ".lora_B")) else k): v
        for k, v in entry["adapters"].items()
    }
    result = set_peft_model_state_dict(model, adapters, adapter_name=ADAPTER)
    lost = [k for k in result.missing_keys if _is_adapter_key(k)]
    if result.unexpected_keys or lost:
        raise LoraError(f"{where}: adapters do not fit: {(result.unexpected_keys + lost)[:3]} …")
    again, _ = merged_state(model)
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
