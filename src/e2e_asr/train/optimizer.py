"""Adam over the trainable parameters, with frozen modules and per-module LR scales.

``freeze`` prefixes set ``requires_grad = False`` *and* keep those parameters out of the
optimizer, so neither gradients nor Adam's weight decay/moments can move them (one peer parses
such an option and never applies it). ``lr_scales`` puts parameters under a prefix into their own
param group whose LR is the schedule's LR times the scale; the longest matching prefix wins.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _matches(name: str, prefix: str) -> bool:
    """Prefix match on module boundaries ('enc.1' does not match 'enc.10')."""
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def apply_freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Freeze parameters under ``prefixes``; returns the frozen names.

    A prefix that matches no parameter is an error naming it (a typo must not silently train
    everything).
    """
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(_matches(n, prefix) for n in names):
            raise ValueError(
                f"train_config.freeze: prefix '{prefix}' matches no model parameter "
                f"(parameters start with: {', '.join(sorted({n.split('.')[0] for n in names}))})"
            )
    frozen = []
    for name, param in model.named_parameters():
        if any(_matches(name, p) for p in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def param_groups(model: nn.Module, lr_scales: dict[str, float]) -> list[dict[str, Any]]:
    """Trainable parameters grouped by LR scale (each group carries ``lr_scale``)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in lr_scales:
        if not any(_matches(n, prefix) for n in names):
            raise ValueError(
                f"train_config.lr_scales: prefix '{prefix}' matches no model parameter"
            )
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    by_scale_names: dict[float, list[str]] = {}
    # longest prefix first so 'encoder.encoders.0' overrides 'encoder'
    ordered = sorted(lr_scales.items(), key=lambda kv: len(kv[0]), reverse=True)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0
        for prefix, s in ordered:
            if _matches(name, prefix):
                scale = float(s)
                break
        if scale == 0.0:
            # scale 0 is a freeze in disguise: keep it out of Adam so decay cannot move it
            param.requires_grad_(False)
            continue
        by_scale.setdefault(scale, []).append(param)
        by_scale_names.setdefault(scale, []).append(name)
    if not by_scale:
        raise ValueError("no trainable parameters left after freeze/lr_scales")
    return [
        {"params": by_scale[s], "lr_scale": s, "lr": 0.0, "param_names": by_scale_names[s]}
        for s in sorted(by_scale)
    ]


def build_optimizer(
    model: nn.Module, opti_config: dict[str, Any], lr_scales: dict[str, float]
) -> torch.optim.Optimizer:
    """Adam with the seed's Noam settings (betas, eps) over ``param_groups``."""
    groups = param_groups(model, lr_scales)
    return torch.optim.Adam(
        groups,
        lr=0.0,
        betas=tuple(opti_config["betas"]),
        eps=float(opti_config["eps"]),
        weight_decay=float(opti_config["weight_decay"]),
    )
