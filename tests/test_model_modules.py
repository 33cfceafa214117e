"""Building blocks: subsampling lengths, key names, loss algebra, relative shift."""

import math

import pytest
import torch
from model_fixtures import tiny_model_config

from e2e_asr.model import add_sos_eos, build_model
from e2e_asr.model.attention import rel_shift
from e2e_asr.model.embedding import PositionalEncoding, RelPositionalEncoding
from e2e_asr.model.label_smoothing import LabelSmoothingLoss
from e2e_asr.model.subsampling import LAYOUTS, Conv2dSubsampling, conv_out_lengths

ESPNET_LENGTHS = {  # the formulas as ESPnet writes them
    "conv2d": lambda t: ((t - 1) // 2 - 1) // 2,
    "conv2d6": lambda t: ((t - 1) // 2 - 2) // 3,
    "conv2d8": lambda t: (((t - 1) // 2 - 1) // 2 - 1) // 2,
}


def tiny(**kw):
    mc = tiny_model_config(**kw)
    return build_model(mc, {"rate": 0.3, "smoothing": 0.1})


@pytest.mark.parametrize("layer, rate", [("conv2d", 4), ("conv2d6", 6), ("conv2d8", 8)])
def test_subsampling_shapes_and_lengths(layer, rate):
    sub = Conv2dSubsampling(20, 8, layer, PositionalEncoding(8, 0.0))
    for t in (15, 16, 31, 64, 101):
        x, lens = sub(torch.randn(1, t, 20), torch.tensor([t]))
        assert x.shape[1] == ESPNET_LENGTHS[layer](t) == int(lens[0]), (layer, t)
        assert x.shape[2] == 8
    # Too short for the convolutions: length 0, never negative.
    short = torch.arange(0, 15)
    expected = [max(ESPNET_LENGTHS[layer](t), 0) for t in range(15)]
    assert conv_out_lengths(short, LAYOUTS[layer]).tolist() == expected
    assert tiny(encoder_input_layer=layer).subsampling_rate == rate


def test_espnet_key_names():
    keys = set(tiny().state_dict())
    for k in [
        "encoder.embed.conv.0.weight",
        "encoder.embed.conv.2.weight",
        "encoder.embed.out.0.weight",
        "encoder.encoders.1.self_attn.linear_q.weight",
        "encoder.encoders.1.self_attn.linear_k.bias",
        "encoder.encoders.1.self_attn.linear_v.weight",
        "encoder.encoders.1.self_attn.linear_out.weight",
        "encoder.encoders.0.feed_forward.w_1.weight",
        "encoder.encoders.0.feed_forward.w_2.weight",
        "encoder.encoders.0.norm1.weight",
        "encoder.encoders.0.norm2.bias",
        "encoder.after_norm.weight",
        "decoder.embed.0.weight",
        "decoder.decoders.1.self_attn.linear_q.weight",
        "decoder.decoders.1.src_attn.linear_k.weight",
        "decoder.decoders.0.norm1.weight",
        "decoder.decoders.0.norm2.weight",
        "decoder.decoders.0.norm3.weight",
        "decoder.after_norm.weight",
        "decoder.output_layer.weight",
        "ctc.ctc_lo.weight",
        "global_cmvn.mean",
        "global_cmvn.istd",
    ]:
        assert k in keys, k
    # Positional tables are recomputed, not saved (ESPnet checkpoints lack them too).
    assert not any(k.endswith(".pe") for k in keys)
    assert "encoder.embed.conv.4.weight" in tiny(encoder_input_layer="conv2d8").state_dict()


def test_conformer_key_names():
    keys = set(tiny(encoder_type="conformer", cnn_module_kernel=5).state_dict())
    p = "encoder.encoders.0."
    for k in [
        "self_attn.linear_pos.weight",
        "self_attn.pos_bias_u",
        "self_attn.pos_bias_v",
        "feed_forward_macaron.w_1.weight",
        "feed_forward.w_2.weight",
        "conv_module.pointwise_conv1.weight",
        "conv_module.depthwise_conv.weight",
        "conv_module.norm.running_mean",
        "conv_module.pointwise_conv2.weight",
        "norm_ff.weight",
        "norm_mha.weight",
        "norm_ff_macaron.weight",
        "norm_conv.weight",
        "norm_final.weight",
    ]:
        assert p + k in keys, k
    assert "self_attn.linear_pos.bias" not in {k[len(p) :] for k in keys}
    plain = set(
        tiny(encoder_type="conformer", macaron_style=False, use_cnn_module=False).state_dict()
    )
    assert not any("macaron" in k or "conv_module" in k or "norm_final" in k for k in plain)


def test_label_smoothing_matches_explicit_kl():
    torch.manual_seed(0)
    v, smoothing = 7, 0.1
    logp = torch.log_softmax(torch.randn(2, 5, v), -1)
    target = torch.tensor([[1, 2, 3, -1, -1], [4, 5, 6, 0, 6]])
    loss = LabelSmoothingLoss(v, -1, smoothing)(logp, target)
    flat, tgt = logp.reshape(-1, v), target.reshape(-1)
    expected = 0.0
    for row, t in zip(flat, tgt, strict=True):
        if t < 0:
            continue
        dist = torch.full((v,), smoothing / (v - 1))
        dist[t] = 1 - smoothing
        expected += float((dist * (dist.log() - row)).sum())
    assert float(loss) == pytest.approx(expected / 2, rel=1e-5)  # divided by batch size
    per_token = LabelSmoothingLoss(v, -1, smoothing, normalize_length=True)(logp, target)
    assert float(per_token) == pytest.approx(expected / 8, rel=1e-5)


def test_rel_shift_aligns_relative_positions():
    t = 5
    # score[i, k] holds the relative position that column k of pos_emb stands for.
    rel = torch.arange(t - 1, -t, -1).float()
    x = rel.expand(1, 1, t, 2 * t - 1).clone()
    out = rel_shift(x)[0, 0]
    i, j = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    assert torch.equal(out, (i - j).float())  # query i against key j sees position i - j


def test_rel_positional_encoding_table():
    enc = RelPositionalEncoding(8, 0.0, max_len=50)
    x, pos = enc(torch.zeros(1, 4, 8))
    assert pos.shape == (1, 7, 8)
    # Middle row is relative position 0: sin 0 = 0, cos 0 = 1.
    assert torch.allclose(pos[0, 3, 0::2], torch.zeros(4))
    assert torch.allclose(pos[0, 3, 1::2], torch.ones(4))
    assert torch.allclose(pos[0, 0, 0], torch.tensor(math.sin(3.0)))  # position +3
    with pytest.raises(ValueError, match="longer than the positional table"):
        enc(torch.zeros(1, 51, 8))


def test_add_sos_eos():
    ys = torch.tensor([[3, 4, -1], [5, 6, 7]])
    ys_in, ys_out, lens = add_sos_eos(ys, 9, 9, -1)
    assert ys_in.tolist() == [[9, 3, 4, 9], [9, 5, 6, 7]]
    assert ys_out.tolist() == [[3, 4, 9, -1], [5, 6, 7, 9]]
    assert lens.tolist() == [3, 4]


def test_cmvn_applied_in_encode():
    model = tiny().eval()
    feats, lens = torch.randn(1, 40, 20) * 3 + 5, torch.tensor([40])
    mean, istd = torch.full((20,), 5.0), torch.full((20,), 1 / 3)
    with torch.no_grad():
        raw, _ = model.encode((feats - 5) / 3, lens)
        model.set_cmvn(mean, istd)
        normed, _ = model.encode(feats, lens)
    assert torch.allclose(raw, normed, atol=1e-5)
    with pytest.raises(ValueError, match="does not match feature dim"):
        model.set_cmvn(torch.zeros(21), torch.ones(21))


def test_conv_module_matches_conv1d_layout():
    # Pointwise convs run as matmuls; results must equal the Conv1d layout ESPnet weights
    # were trained with.
    from e2e_asr.model.convolution import ConvolutionModule

    torch.manual_seed(0)
    m = ConvolutionModule(16, 5).eval()
    x = torch.randn(2, 30, 16)
    h = torch.nn.functional.glu(m.pointwise_conv1(x.transpose(1, 2)), dim=1)
    ref = m.pointwise_conv2(m.activation(m.norm(m.depthwise_conv(h)))).transpose(1, 2)
    out = m(x, torch.ones(2, 30, dtype=torch.bool))
    assert torch.allclose(out, ref, atol=1e-6)


def _explicit_attention(att, q, k, v, scores_extra, mask):
    """softmax(QK^T/sqrt(d) + extra) V with masked keys, written out as ESPnet1 does."""
    qh, kh, vh = att.forward_qkv(q, k, v)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) / math.sqrt(att.d_k) + scores_extra
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)
    ctx = torch.matmul(probs, vh).transpose(1, 2).reshape(q.size(0), -1, att.h * att.d_k)
    return att.linear_out(ctx)


def test_attention_matches_explicit_formula():
    from e2e_asr.model.attention import MultiHeadedAttention

    torch.manual_seed(0)
    att = MultiHeadedAttention(4, 16, 0.0, kv_dim=24).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 24)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    ref = _explicit_attention(att, q, kv, kv, 0.0, mask)
    assert torch.allclose(att(q, kv, kv, mask), ref, atol=1e-5)


def test_rel_position_attention_matches_explicit_formula():
    from e2e_asr.model.attention import RelPositionMultiHeadedAttention

    torch.manual_seed(0)
    att = RelPositionMultiHeadedAttention(2, 8, 0.0).eval()
    t = 6
    x = torch.randn(2, t, 8)
    _, pos_emb = RelPositionalEncoding(8, 0.0, max_len=20)(x)
    mask = torch.tensor([[True] * t, [True] * 4 + [False] * 2])[:, None, None, :]
    # Transformer-XL terms without the shift trick: position of query i vs key j is i - j,
    # found at row (t - 1) - (i - j) of pos_emb.
    qh, kh, _ = att.forward_qkv(x, x, x)
    p = att.linear_pos(pos_emb).view(1, -1, att.h, att.d_k).transpose(1, 2)
    i, j = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    p_ij = p[:, :, (t - 1) - (i - j)]  # [1, H, t, t, d_k]
    q_v = qh + att.pos_bias_v.unsqueeze(1)
    bd = (q_v.unsqueeze(3) * p_ij).sum(-1) / math.sqrt(att.d_k)
    q_u_minus_q = att.pos_bias_u.unsqueeze(1)  # ac uses q + u: add u's share explicitly
    ac_extra = torch.matmul(q_u_minus_q, kh.transpose(-2, -1)) / math.sqrt(att.d_k)
    ref = _explicit_attention(att, x, x, x, bd + ac_extra, mask)
    out = att(x, x, x, pos_emb, mask)
    assert torch.allclose(out, ref, atol=1e-5)
