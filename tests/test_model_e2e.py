"""The hybrid model: padding invariance, loss parts, learning on a fixed batch."""

import pytest
import torch
from model_fixtures import one_thread, tiny_model_config  # noqa: F401 (autouse fixture)

from e2e_asr.model import add_sos_eos, build_model


def tiny(rate=0.3, **kw):
    mc = tiny_model_config(**kw)
    torch.manual_seed(0)
    return build_model(mc, {"rate": rate, "smoothing": 0.1})


ENCODERS = [
    {},
    {"encoder_type": "conformer", "cnn_module_kernel": 5},
    {
        "encoder_type": "conformer",
        "pos_enc_layer_type": "abs_pos",
        "encoder_input_layer": "conv2d6",
    },
]


@pytest.mark.parametrize("kw", ENCODERS, ids=["transformer", "conformer", "conformer-abs6"])
def test_padding_does_not_change_encoder_or_decoder(kw):
    model = tiny(**kw).eval()
    torch.manual_seed(1)
    a, b = torch.randn(1, 60, 20), torch.randn(1, 41, 20)
    batch = torch.zeros(2, 60, 20)
    batch[0], batch[1, :41] = a[0], b[0]
    batch[1, 41:] = 100.0  # garbage in the padding must not leak
    lens = torch.tensor([60, 41])
    ys_in = torch.tensor([[9, 1, 2, 3], [9, 4, 5, 0]])
    ys_lens = torch.tensor([4, 3])
    with torch.no_grad():
        enc, enc_lens = model.encode(batch, lens)
        enc_b, enc_lens_b = model.encode(b, lens[1:])
        enc_a, _ = model.encode(a, lens[:1])
        n = int(enc_lens_b[0])
        assert int(enc_lens[1]) == n and enc_b.shape[1] == n
        assert torch.allclose(enc[1, :n], enc_b[0], atol=1e-5)
        assert torch.allclose(enc[0], enc_a[0], atol=1e-5)
        dec = model.decoder_logprobs(ys_in, ys_lens, enc, enc_lens)
        dec_b = model.decoder_logprobs(ys_in[1:, :3], ys_lens[1:], enc_b, enc_lens_b)
    assert dec.shape == (2, 4, 10)
    assert torch.allclose(dec[1, :3], dec_b[0], atol=1e-5)
    assert torch.allclose(dec.exp().sum(-1), torch.ones(2, 4), atol=1e-5)


def test_decoder_is_causal():
    model = tiny().eval()
    enc, enc_lens = model.encode(torch.randn(1, 50, 20), torch.tensor([50]))
    ys = torch.tensor([[9, 1, 2, 3]])
    ys2 = torch.tensor([[9, 1, 7, 8]])
    with torch.no_grad():
        p1 = model.decoder_logprobs(ys, torch.tensor([4]), enc, enc_lens)
        p2 = model.decoder_logprobs(ys2, torch.tensor([4]), enc, enc_lens)
    assert torch.allclose(p1[:, :2], p2[:, :2], atol=1e-6)
    assert not torch.allclose(p1[:, 2:], p2[:, 2:], atol=1e-3)


def test_loss_is_weighted_sum_and_ctc_matches_torch():
    model = tiny(rate=0.3).eval()
    feats, lens = torch.randn(2, 50, 20), torch.tensor([50, 33])
    ys = torch.tensor([[1, 2, 3], [4, 5, -1]])
    out = model(feats, lens, ys)
    assert set(out) == {"loss", "loss_ctc", "loss_att", "acc"}
    assert torch.allclose(out["loss"], 0.3 * out["loss_ctc"] + 0.7 * out["loss_att"])
    assert 0.0 <= float(out["acc"]) <= 1.0
    enc, enc_lens = model.encode(feats, lens)
    logp = model.ctc_log_probs(enc)
    ref = (
        sum(
            torch.nn.functional.ctc_loss(
                logp[i : i + 1, : enc_lens[i]].transpose(0, 1),
                ys[i : i + 1, : [3, 2][i]],
                enc_lens[i : i + 1],
                torch.tensor([[3, 2][i]]),
                reduction="sum",
            )
            for i in range(2)
        )
        / 2
    )
    assert float(out["loss_ctc"].detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    ctc_only = tiny(rate=1.0)(feats, lens, ys)
    assert float(ctc_only["loss_att"]) == 0.0 and ctc_only["loss"].requires_grad


def test_accuracy_counts_eos_and_ignores_padding():
    model = tiny().eval()
    feats, lens = torch.randn(1, 50, 20), torch.tensor([50])
    ys = torch.tensor([[1, 2, -1]])
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        ys_in, ys_out, ys_in_lens = add_sos_eos(ys, 9, 9, -1)
        pred = model.decoder_logprobs(ys_in, ys_in_lens, enc, enc_lens).argmax(-1)
        expected = float((pred[0, :3] == ys_out[0, :3]).float().mean())
        assert float(model(feats, lens, ys)["acc"]) == pytest.approx(expected)


@pytest.mark.parametrize("kw", ENCODERS[:2], ids=["transformer", "conformer"])
def test_loss_falls_on_fixed_batch(kw):
    model = tiny(**kw)
    model.train()
    torch.manual_seed(2)
    feats, lens = torch.randn(3, 48, 20), torch.tensor([48, 40, 36])
    ys = torch.tensor([[1, 2, 3, 4], [5, 6, 7, -1], [8, 2, -1, -1]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(feats, lens, ys)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("kw", ENCODERS[:2], ids=["transformer", "conformer"])
def test_bf16_autocast_trains(kw):
    # The trainer's CPU AMP mode: mixed bf16/fp32 operands must not break SDPA masks.
    model = tiny(**kw)
    feats, lens = torch.randn(2, 48, 20), torch.tensor([48, 40])
    ys = torch.tensor([[1, 2, 3], [5, 6, -1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, lens, ys)
    out["loss"].backward()
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"]).item()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
