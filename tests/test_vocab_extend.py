"""Vocabulary extension: new units before <sos/eos>, known-unit outputs unchanged, learnable."""

import pytest
import torch
from model_fixtures import tiny_model_config

from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import load_model
from e2e_asr.model.vocab import (
    VocabError,
    extend_model_units,
    extend_payload,
    extend_state_dict,
)

OLD = ["<blank>", "<unk>", "你", "好", "世", "界", "<sos/eos>"]
ADDED = ["鲸", "鲨", "鳄"]
NEW = OLD[:-1] + ADDED + ["<sos/eos>"]
MC = tiny_model_config(
    odim=len(OLD),
    encoder_linear_units=24,
    encoder_num_blocks=1,
    decoder_linear_units=24,
    decoder_num_block=1,
)
CC = {"rate": 0.3, "smoothing": 0.1, "size": len(OLD)}


def sharp_model():
    """A model with confident outputs (large logits), the hard case for hiding new units."""
    torch.manual_seed(3)
    model = build_model(MC, CC).eval()
    with torch.no_grad():
        for layer in (model.ctc.ctc_lo, model.decoder.output_layer):
            layer.weight.mul_(8.0)
            layer.bias.normal_(0.0, 5.0)
    return model


def run(model, feats, ys):
    with torch.no_grad():
        enc, lens = model.encode(feats, torch.tensor([feats.size(1)]))
        dec = model.decoder_logprobs(ys, torch.tensor([ys.size(1)]), enc, lens)
        return model.ctc_log_probs(enc), dec


def known_columns(logp, v_old, n_new):
    """Old units' columns of an extended output: ids below <sos/eos>, then <sos/eos> last."""
    return torch.cat([logp[..., : v_old - 1], logp[..., v_old - 1 + n_new :]], dim=-1)


def test_known_unit_outputs_unchanged_and_new_units_hidden():
    model = sharp_model()
    grown = extend_model_units(model, OLD, NEW)
    assert grown.odim == len(NEW) and grown.sos == grown.eos == len(NEW) - 1
    feats = torch.randn(2, 60, 20)
    ys_old = torch.tensor([[6, 2, 3, 4, 5]] * 2)  # sos + known tokens, old ids
    ys_new = ys_old.clone()
    ys_new[:, 0] = len(NEW) - 1  # <sos/eos> moved to the new last id
    ctc_a, dec_a = run(model, feats, ys_old)
    ctc_b, dec_b = run(grown, feats, ys_new)
    n_new = len(ADDED)
    ctc_diff = (known_columns(ctc_b, len(OLD), n_new) - ctc_a).abs().max().item()
    dec_diff = (known_columns(dec_b, len(OLD), n_new) - dec_a).abs().max().item()
    assert ctc_diff < 1e-5 and dec_diff < 1e-5, (ctc_diff, dec_diff)
    # the new units carry (almost) no probability mass yet
    new_cols = slice(len(OLD) - 1, len(OLD) - 1 + n_new)
    assert ctc_b[..., new_cols].exp().sum(-1).max().item() < 1e-8
    assert dec_b[..., new_cols].exp().sum(-1).max().item() < 1e-8
    # existing embedding rows kept, <sos/eos> row moved
    old_emb, new_emb = model.decoder.embed[0].weight, grown.decoder.embed[0].weight
    assert torch.equal(new_emb[: len(OLD) - 1], old_emb[:-1])
    assert torch.equal(new_emb[-1], old_emb[-1])


def _new_unit_logp_after_training(margin: float, steps: int = 10) -> tuple[float, float]:
    torch.manual_seed(0)
    grown = extend_model_units(sharp_model(), OLD, NEW, margin=margin)
    feats = torch.randn(1, 40, 20)
    new_id = NEW.index("鲸")
    prefix = torch.tensor([[len(NEW) - 1, 2]])
    before = run(grown.eval(), feats, prefix)[1][0, 1, new_id].item()
    opt = torch.optim.Adam(grown.parameters(), lr=5e-3)
    grown.train()
    for _ in range(steps):
        opt.zero_grad()
        grown(feats, torch.tensor([40]), torch.tensor([[2, new_id, 3]]))["loss"].backward()
        opt.step()
    return before, run(grown.eval(), feats, prefix)[1][0, 1, new_id].item()


def test_new_units_are_learnable():
    """Ten updates on a target with a new unit raise its log-probability by nats; with a
    -1e4 bias (margin 1e4) it stays at ~0 probability."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a shared machine
    try:
        before, after = _new_unit_logp_after_training(20.0)
        _, after_hidden = _new_unit_logp_after_training(1e4)
    finally:
        torch.set_num_threads(threads)
    assert after > before + 3.0, (before, after)
    assert after_hidden < -1000.0


def test_payload_extension_loads(tmp_path):
    model = sharp_model()
    payload = {
        "model": model.state_dict(),
        "config": {
            "model_config": dict(MC),
            "criterion_config": dict(CC),
            "decode_config": {"char_num": len(OLD)},
            "train_config": {"char_num": None},
        },
        "units": OLD,
        "feature_config": {"type": "fbank", "dim": 20},
        "epoch": 29,
        "step": 100,
        "optimizer": {"state": {}, "param_groups": []},
    }
    grown = extend_payload(payload, NEW)
    assert "optimizer" not in grown and payload["config"]["model_config"]["odim"] == len(OLD)
    assert grown["config"]["criterion_config"]["size"] == len(NEW)
    assert grown["config"]["decode_config"]["char_num"] == len(NEW)
    assert grown["config"]["train_config"]["char_num"] is None
    loaded, _ = load_model(grown)
    assert loaded.odim == len(NEW) and grown["units"] == NEW


@pytest.mark.parametrize(
    "new,needle",
    [
        (["<blank>", "<unk>", "好", "你", "世", "界", "鲸", "<sos/eos>"], "unit 2 is '好'"),
        (OLD[:-1] + ["你", "<sos/eos>"], "repeat"),
        (OLD[:-1] + ["鲸"], "must end with <sos/eos>"),
        (OLD[:-2] + ["<sos/eos>"], "fewer"),
    ],
)
def test_non_extensions_are_refused(new, needle):
    with pytest.raises(VocabError, match=needle):
        extend_state_dict(sharp_model().state_dict(), OLD, new)


def test_same_units_is_a_no_op():
    state = sharp_model().state_dict()
    out = extend_state_dict(state, OLD, list(OLD))
    assert all(torch.equal(out[k], state[k]) for k in state)
