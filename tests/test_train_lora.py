"""LoRA adapters (e2e_asr.train.lora, on peft): only the adapters train, the merged plain model
equals the adapted one (and peft's own merge_and_unload), a checkpoint payload restores the
adapted model bit for bit, and a run without LoRA never imports peft."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from model_fixtures import one_thread, tiny_model_config  # noqa: F401 (autouse fixture)

from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import load_checkpoint, save_checkpoint
from e2e_asr.train import lora

ENCODERS = {
    "transformer": {},
    "conformer": {"encoder_type": "conformer", "cnn_module_kernel": 5},
}


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_model_config(**kw), {"rate": 0.3, "smoothing": 0.1})


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(3, 48, 20, generator=g)
    lens = torch.tensor([48, 40, 31])
    ys = torch.tensor([[1, 2, 3, 4], [5, 6, 7, -1], [8, 2, -1, -1]])
    return feats, lens, ys


def outputs(model: torch.nn.Module, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC and attention-decoder log-probabilities (eval mode, no dropout)."""
    feats, lens, _ = batch(seed)
    ys_in = torch.tensor([[9, 1, 2, 3], [9, 4, 5, 0], [9, 6, 0, 0]])
    model.eval()
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        ctc = model.ctc_log_probs(enc)
        att = model.decoder_logprobs(ys_in, torch.tensor([4, 3, 2]), enc, enc_lens)
    return ctc, att


def train_steps(model: torch.nn.Module, n: int = 5, lr: float = 1e-2) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for i in range(n):
        feats, lens, ys = batch(10 + i)
        opt.zero_grad()
        model(feats, lens, ys)["loss"].backward()
        opt.step()


def cfg(**kw) -> dict:
    return lora.validate_lora({"rank": 4, **kw}, "test")


# ------------------------------------------------------------------ config


def test_config_defaults_and_validation() -> None:
    assert lora.validate_lora(None, "c.yaml") == {
        "rank": 0,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": lora.DEFAULT_TARGETS,
    }
    assert not lora.enabled(lora.validate_lora({}, "c.yaml"))
    on = lora.validate_lora({"rank": 8, "alpha": 32, "target_modules": ["encoder.*"]}, "c.yaml")
    assert lora.enabled(on) and on["alpha"] == 32.0 and lora.scaling(on) == 4.0
    bad = [
        ({"rnak": 8}, "unknown key 'rnak' in section 'train_config.lora'"),
        ({"rank": -1}, "rank"),
        ({"rank": 2.5}, "rank"),
        ({"rank": 4, "alpha": 0}, "alpha"),
        ({"rank": 4, "dropout": 1.0}, "dropout"),
        ({"rank": 4, "target_modules": []}, "target_modules"),
        ({"rank": 4, "target_modules": "linear_q"}, "target_modules"),
        ([8], "must be a mapping"),
    ]
    for given, msg in bad:
        with pytest.raises(lora.LoraError, match=msg) as err:
            lora.validate_lora(given, "c.yaml")
        assert "c.yaml" in str(err.value)


def test_targets_select_linear_layers_by_suffix_or_glob() -> None:
    model = tiny()
    names = lora.resolve_targets(model, lora.DEFAULT_TARGETS)
    # 2 encoder blocks x (4 attention + 2 FF) + 2 decoder blocks x (8 attention + 2 FF)
    assert len(names) == 2 * 6 + 2 * 10
    assert "encoder.encoders.0.self_attn.linear_q" in names
    assert "decoder.decoders.1.src_attn.linear_v" in names
    assert not any(n.startswith("ctc") or "output_layer" in n for n in names)
    enc = lora.resolve_targets(model, ["encoder.*"])
    assert enc and all(n.startswith("encoder.") for n in enc)
    assert "encoder.embed.out.0" in enc  # every Linear of the encoder, the front end's too
    assert lora.resolve_targets(model, ["ctc.ctc_lo"]) == ["ctc.ctc_lo"]
    with pytest.raises(lora.LoraError, match="'linear_z' matches no nn.Linear"):
        lora.resolve_targets(model, ["linear_q", "linear_z"])


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("kw", ENCODERS.values(), ids=ENCODERS.keys())
def test_wrapped_model_starts_equal_and_only_adapters_train(kw: dict) -> None:
    model = tiny(**kw)
    ref = outputs(copy.deepcopy(model))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    targets = lora.apply_lora(model, cfg(dropout=0.1))
    got = outputs(model)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])  # B = 0 at the start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{t}.lora_{x}.default.weight" for t in targets for x in "AB"}
    assert sorted(lora.lora_layers(model)) == sorted(targets)
    n_train, n_total = lora.count_parameters(model)
    assert n_train == sum(
        4 * (m.in_features + m.out_features) for m in lora.lora_layers(model).values()
    )
    assert n_train < n_total
    train_steps(model)
    after = model.state_dict()
    # the base weights of an adapted layer live on as <m>.base_layer.weight|bias
    unadapted = {k.replace(".base_layer.", "."): v for k, v in after.items() if ".lora_" not in k}
    assert set(unadapted) == set(before)
    for key, value in before.items():
        # every weight and buffer of the base model is bit-identical after the updates
        # (BatchNorm statistics excepted: they follow the data in train mode)
        if "running_" in key or "num_batches_tracked" in key:
            continue
        assert torch.equal(unadapted[key], value), key
    moved = [k for k in after if k.endswith(".lora_B.default.weight") and after[k].abs().max() > 0]
    assert len(moved) == len(targets)
    assert (outputs(model)[0] - ref[0]).abs().max() > 1e-3  # and they changed the model


@pytest.mark.parametrize("kw", ENCODERS.values(), ids=ENCODERS.keys())
def test_merged_plain_model_equals_wrapped_model(kw: dict) -> None:
    model = tiny(**kw)
    lora_cfg = cfg(alpha=8, target_modules=["linear_q", "linear_v", "w_1", "ctc.ctc_lo"])
    lora.apply_lora(model, lora_cfg)
    train_steps(model, n=8)
    want = outputs(model)
    merged, entry = lora.lora_payload(model, lora_cfg)
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    plain = tiny(**kw)
    plain.load_state_dict(merged)  # strict: the ordinary ESPnet names, nothing else
    got = outputs(plain)
    assert (got[0] - want[0]).abs().max() < 1e-5
    assert (got[1] - want[1]).abs().max() < 1e-5
    # the merge really moved the adapted weights, and only those
    for key, value in merged.items():
        moved = not torch.equal(value, entry["base"].get(key, value))
        assert moved == (key in entry["base"]), key


def test_merge_is_peft_merge_and_equals_w_plus_scaled_b_a() -> None:
    lora_cfg = cfg(alpha=6, target_modules=["linear_q", "w_2"])
    model = tiny()
    lora.apply_lora(model, lora_cfg)
    train_steps(model, n=3)
    merged, base = lora.merged_state(model)
    # peft's own merge and unload, layer by layer, on a copy
    import peft  # noqa: F401 (loaded by apply_lora)

    unloaded = copy.deepcopy(model)
    for name, layer in lora.lora_layers(unloaded).items():
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(unloaded.get_submodule(parent), child, layer.get_base_layer())
    want = unloaded.state_dict()
    assert set(want) == set(merged)
    for key, value in want.items():
        assert torch.equal(value, merged[key]), key
    # = W + (alpha / rank) B A, and the model itself stays unmerged
    name, layer = next(iter(lora.lora_layers(model).items()))
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    w = base[f"{name}.weight"]
    assert b.abs().max() > 0
    assert torch.allclose(merged[f"{name}.weight"], w + 1.5 * b.detach() @ a.detach(), atol=1e-6)
    assert torch.equal(layer.base_layer.weight, w) and not layer.merged


def test_a_run_without_lora_never_imports_peft() -> None:
    code = (
        "import sys\n"
        "import e2e_asr.train.trainer, e2e_asr.train.setup\n"
        "from e2e_asr.train import lora\n"
        "assert not lora.enabled(lora.validate_lora(None, 'c'))\n"
        "import torch\n"
        "assert lora.lora_layers(torch.nn.Linear(2, 2)) == {}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('peft', 'transformers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ checkpoints


def test_payload_round_trip_through_a_weights_only_checkpoint(tmp_path) -> None:
    kw = ENCODERS["conformer"]
    lora_cfg = cfg(dropout=0.1)
    model = tiny(**kw)
    lora.apply_lora(model, lora_cfg)
    train_steps(model, n=4)
    merged, entry = lora.lora_payload(model, lora_cfg)
    path = tmp_path / "checkpoint.1"
    save_checkpoint(path, {"model": merged, "lora": entry, "epoch": 1})
    payload = load_checkpoint(path)  # weights_only loading
    again = tiny(**kw)
    torch.manual_seed(123)  # other random adapters: all must come from the file
    lora.apply_lora(again, lora_cfg)
    lora.load_lora_payload(again, payload, str(path))
    want, got = model.state_dict(), again.state_dict()
    assert set(want) == set(got)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert all(torch.equal(a, b) for a, b in zip(outputs(model), outputs(again), strict=True))
    # the adapters are stored under peft's names, the merge of the restored model = the file's
    assert set(entry["adapters"]) == {
        f"{m}.lora_{x}.weight" for m in lora.lora_layers(model) for x in "AB"
    }
    recomputed, _ = lora.merged_state(again)
    assert all(torch.equal(recomputed[k], payload["model"][k]) for k in payload["model"])
    # training goes on identically from the restored state (same dropout stream)
    for m in (model, again):
        torch.manual_seed(5)
        train_steps(m, n=2)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_restore_reads_the_adapter_names_of_the_hand_written_lora() -> None:
    """Checkpoints written before peft named the adapters <m>.lora_A / <m>.lora_B."""
    lora_cfg = cfg()
    model = tiny()
    lora.apply_lora(model, lora_cfg)
    train_steps(model, n=2)
    merged, entry = lora.lora_payload(model, lora_cfg)
    old = {k.removesuffix(".weight"): v for k, v in entry["adapters"].items()}
    again = tiny()
    lora.apply_lora(again, lora_cfg)
    lora.load_lora_payload(again, {"model": merged, "lora": {**entry, "adapters": old}}, "old")
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in again.state_dict().items())


def test_restore_refuses_other_targets_rank_or_an_altered_file(tmp_path) -> None:
    lora_cfg = cfg()
    model = tiny()
    lora.apply_lora(model, lora_cfg)
    train_steps(model, n=2)
    merged, entry = lora.lora_payload(model, lora_cfg)
    payload = {"model": merged, "lora": entry}
    other = tiny()
    lora.apply_lora(other, cfg(target_modules=["linear_q"]))
    with pytest.raises(lora.LoraError, match="target_modules differs"):
        lora.load_lora_payload(other, payload, "ck")
    other = tiny()
    lora.apply_lora(other, cfg(rank=2))
    with pytest.raises(lora.LoraError, match="rank 4"):
        lora.load_lora_payload(other, payload, "ck")
    other = tiny()
    lora.apply_lora(other, lora_cfg)
    with pytest.raises(lora.LoraError, match="holds no LoRA state"):
        lora.load_lora_payload(other, {"model": merged}, "ck")
    key = "encoder.encoders.0.self_attn.linear_q.weight"
    altered = {"model": {**merged, key: merged[key] + 1e-3}, "lora": entry}
    with pytest.raises(lora.LoraError, match=f"ck: {key} is not base"):
        lora.load_lora_payload(other, altered, "ck")


def test_apply_twice_or_with_rank_zero_is_refused() -> None:
    model = tiny()
    with pytest.raises(lora.LoraError, match="rank is 0"):
        lora.apply_lora(model, lora.validate_lora({}, "t"))
    lora.apply_lora(model, cfg())
    with pytest.raises(lora.LoraError, match="already carries"):
        lora.apply_lora(model, cfg())
