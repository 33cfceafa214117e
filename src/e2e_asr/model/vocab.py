"""Grow a model's vocabulary: new units go before `<sos/eos>`, outputs stay as they were.

The extended unit list is the old one minus its final `<sos/eos>`, plus the new units, plus
`<sos/eos>` last (what `steps/make_json.py --extend-units` writes). Three tensors depend on
the number of units: `ctc.ctc_lo`, `decoder.output_layer` (rows = output units) and
`decoder.embed.0` (rows = input tokens). Existing rows keep their weights; the `<sos/eos>`
row moves to the new last index.

New output rows get the *mean* of the existing rows and the mean bias minus `margin`. Their
logit is then `mean_k(z_k) - margin`, and since logsumexp(z) >= mean(z) + log V, each new unit
has probability <= exp(-margin) / V before the first update: with the default margin (20,
plus log(n_new / V) when many units are added) known-unit log-probabilities move by < 1e-8.
A -1e4 bias would also hide them, but Adam moves a bias by about the learning rate per step,
so such units would stay unreachable for tens of thousands of steps; from mean - 20 the
gradient lifts them in a few hundred. New embedding rows are the mean embedding: they are only
read once the new tokens appear in training targets.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from e2e_asr.model.e2e import E2EModel, build_model

SOS_EOS = "<sos/eos>"
OUTPUT_LAYERS = ("ctc.ctc_lo", "decoder.output_layer")
EMBEDDING = "decoder.embed.0.weight"
DEFAULT_MARGIN = 20.0


class VocabError(ValueError):
    """The new unit list is not an extension of the old one."""


def check_extension(old_units: list[str], new_units: list[str]) -> int:
    """Number of added units; VocabError unless `new` = old[:-1] + added + [<sos/eos>]."""
    if not old_units or old_units[-1] != SOS_EOS:
        raise VocabError(f"old units must end with {SOS_EOS}")
    if not new_units or new_units[-1] != SOS_EOS:
        raise VocabError(f"new units must end with {SOS_EOS}")
    n_old = len(old_units)
    if len(new_units) < n_old:
        raise VocabError(f"new units ({len(new_units)}) are fewer than the old ({n_old})")
    for i, (a, b) in enumerate(zip(old_units[:-1], new_units, strict=False)):
        if a != b:
            raise VocabError(
                f"unit {i} is {b!r} in the new list but {a!r} in the model's units: new units "
                f"must only be inserted before {SOS_EOS} (existing ids may not change)"
            )
    added = new_units[n_old - 1 : -1]
    if len(set(new_units)) != len(new_units):
        dup = sorted({u for u in added if new_units.count(u) > 1})
        raise VocabError(f"new units repeat existing or each other: {dup[:10]}")
    return len(added)


def _grow_rows(t: torch.Tensor, n_new: int, fill: torch.Tensor) -> torch.Tensor:
    """Insert `n_new` copies of `fill` before the last row of `t` (the <sos/eos> row)."""
    extra = fill.unsqueeze(0).expand(n_new, *fill.shape).to(t.dtype)
    return torch.cat([t[:-1], extra, t[-1:]], dim=0)


def extend_state_dict(
    state: dict[str, torch.Tensor],
    old_units: list[str],
    new_units: list[str],
    margin: float = DEFAULT_MARGIN,
) -> dict[str, torch.Tensor]:
    """A copy of `state` (our key names) with the unit-sized tensors grown to `new_units`."""
    n_new = check_extension(old_units, new_units)
    v_old = len(old_units)
    out = dict(state)
    if n_new == 0:
        return out
    for key in (EMBEDDING, *(f"{p}.weight" for p in OUTPUT_LAYERS)):
        if key not in state:
            raise VocabError(f"state_dict has no '{key}'")
        if state[key].shape[0] != v_old:
            raise VocabError(
                f"'{key}' has {state[key].shape[0]} rows but the old unit list has {v_old}"
            )
    # Keep the bound exp(-margin)/V per unit even for many new units: scale by n_new / V.
    shift = margin + math.log(max(1.0, n_new / v_old))
    with torch.no_grad():
        for prefix in OUTPUT_LAYERS:
            w, b = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
            out[f"{prefix}.weight"] = _grow_rows(w, n_new, w.float().mean(0))
            out[f"{prefix}.bias"] = _grow_rows(b, n_new, b.float().mean() - shift)
        emb = state[EMBEDDING]
        out[EMBEDDING] = _grow_rows(emb, n_new, emb.float().mean(0))
    return out


def extend_model_units(
    model: E2EModel,
    old_units: list[str],
    new_units: list[str],
    margin: float = DEFAULT_MARGIN,
) -> E2EModel:
    """A new model with `len(new_units)` outputs; known-unit outputs are unchanged."""
    if len(old_units) != model.odim:
        raise VocabError(f"the model has {model.odim} outputs but old_units has {len(old_units)}")
    state = extend_state_dict(model.state_dict(), old_units, new_units, margin)
    mc = model.config.to_dict()
    mc["odim"] = len(new_units)
    cc = model.criterion_config.to_dict()
    if cc.get("size") is not None:
        cc["size"] = len(new_units)
    grown = build_model(mc, cc)
    grown.load_state_dict(state, strict=True)
    device = next(model.parameters()).device
    return grown.to(device).train(model.training)


def extend_payload(
    payload: dict[str, Any], new_units: list[str], margin: float = DEFAULT_MARGIN
) -> dict[str, Any]:
    """A checkpoint payload grown to `new_units`: weights, units and every odim-like field.

    The optimizer state (if any) is left out: its moment tensors have the old shapes.
    """
    old_units = list(payload["units"])
    out = {k: v for k, v in payload.items() if k != "optimizer"}
    out["model"] = extend_state_dict(payload["model"], old_units, new_units, margin)
    out["units"] = list(new_units)
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in payload["config"].items()}
    odim = len(new_units)
    config["model_config"]["odim"] = odim
    for section, key in (
        ("criterion_config", "size"),
        ("train_config", "char_num"),
        ("decode_config", "char_num"),
    ):
        if isinstance(config.get(section), dict) and config[section].get(key) is not None:
            config[section][key] = odim
    out["config"] = config
    return out
