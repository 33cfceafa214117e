"""The relative-position variants other toolkits trained with: `legacy_rel_pos` (ESPnet's
LegacyRelPositionalEncoding + LegacyRelPositionMultiHeadedAttention) and `wenet_rel_pos`
(WeNet's rel_pos: absolute key positions, no rel_shift).

Each is checked against the scores written out element by element from the toolkit's
definition, for padding, and for ONNX parity at lengths other than the export length.
"""

import math

import pytest
import torch
from model_fixtures import (  # noqa: F401 (one_thread: autouse fixture)
    assert_encoder_onnx_parity,
    one_thread,
    tiny_model_config,
)

from e2e_asr.model import build_model
from e2e_asr.model.attention import RelPositionMultiHeadedAttention
from e2e_asr.model.embedding import LegacyRelPositionalEncoding, WenetRelPositionalEncoding

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore:Constant folding:UserWarning"
)
MAX_LEN = 5000  # ESPnet's table size; the legacy positions depend on it


def sinusoid(pos: float, d: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same), one row, float64."""
    row = torch.zeros(d, dtype=torch.float64)
    for i in range(0, d, 2):
        angle = pos / (10000.0 ** (i / d))
        row[i], row[i + 1] = math.sin(angle), math.cos(angle)
    return row


def test_tables_follow_the_toolkits():
    d, t = 8, 7
    x = torch.randn(2, t, d)
    xs, pos = WenetRelPositionalEncoding(d, 0.0)(x)
    assert torch.allclose(xs, x * math.sqrt(d))
    ref = torch.stack([sinusoid(p, d) for p in range(t)]).float()
    assert pos.shape == (1, t, d) and (pos[0] - ref).abs().max() < 1e-5
    xs, pos = LegacyRelPositionalEncoding(d, 0.0)(x)
    assert torch.allclose(xs, x * math.sqrt(d))
    # ESPnet builds the reversed table once for max_len positions and takes its first T rows.
    ref = torch.stack([sinusoid(MAX_LEN - 1 - r, d) for r in range(t)]).float()
    assert pos.shape == (1, t, d) and (pos[0] - ref).abs().max() < 1e-4


def reference_attention(att, x, pos_emb, mask, variant):
    """softmax(((q+u) k^T + bd) / sqrt(d_k)) v, bd written out per element."""
    q, k, v = att.forward_qkv(x, x, x)  # [B, H, T, d_k]
    b, h, t, dk = q.shape
    p = att.linear_pos(pos_emb).view(1, -1, h, dk).transpose(1, 2)[0]  # [H, T, d_k]
    q_u = q + att.pos_bias_u[None, :, None, :]
    q_v = q + att.pos_bias_v[None, :, None, :]
    ac = torch.einsum("bhid,bhjd->bhij", q_u, k)
    raw = torch.einsum("bhid,hjd->bhij", q_v, p)  # query i against table row j
    if variant == "wenet_rel_pos":
        bd = raw  # no shift: key j is scored against absolute position j
    else:
        # Transformer-XL shift of a square [T, T] matrix (ESPnet legacy, zero_triu off):
        # j <= i reads row i at column T-1-i+j, j = i+1 is the zero pad, j >= i+2 reads the
        # next query's row at column j-i-2.
        bd = torch.zeros_like(raw)
        for i in range(t):
            for j in range(t):
                if j <= i:
                    bd[:, :, i, j] = raw[:, :, i, t - 1 - i + j]
                elif j >= i + 2:
                    bd[:, :, i, j] = raw[:, :, i + 1, j - i - 2]
    scores = (ac + bd) / math.sqrt(dk)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, h * dk)
    return att.linear_out(ctx)


@pytest.mark.parametrize("variant", ["legacy_rel_pos", "wenet_rel_pos"])
def test_attention_matches_written_out_scores(variant):
    torch.manual_seed(0)
    att = RelPositionMultiHeadedAttention(2, 8, 0.0, variant).eval()
    with torch.no_grad():
        att.pos_bias_u.normal_()
        att.pos_bias_v.normal_()
    legacy = variant == "legacy_rel_pos"
    enc = LegacyRelPositionalEncoding if legacy else WenetRelPositionalEncoding
    t = 9
    x = torch.randn(2, t, 8)
    _, pos_emb = enc(8, 0.0)(x)
    mask = torch.tensor([[True] * t, [True] * 6 + [False] * 3])[:, None, None, :]
    with torch.no_grad():
        got = att(x, x, x, pos_emb, mask)
        ref = reference_attention(att, x, pos_emb, mask, variant)
    diff = (got - ref).abs().max().item()
    assert diff < 1e-5, diff


def tiny(variant: str, **kw):
    torch.manual_seed(0)
    mc = tiny_model_config(
        encoder_type="conformer", cnn_module_kernel=5, pos_enc_layer_type=variant, **kw
    )
    model = build_model(mc, {"rate": 0.3})
    model.set_cmvn(torch.randn(20), torch.rand(20) + 0.5)
    return model.eval()


@pytest.mark.parametrize("variant", ["legacy_rel_pos", "wenet_rel_pos"])
def test_padding_content_does_not_leak(variant):
    model = tiny(variant)
    feats = torch.randn(2, 80, 20)
    lens = torch.tensor([80, 57])
    other = feats.clone()
    other[1, 57:] = torch.randn(23, 20) * 10
    with torch.no_grad():
        a, la = model.encode(feats, lens)
        b, _ = model.encode(other, lens)
    n = int(la[1])
    assert (a[1, :n] - b[1, :n]).abs().max() < 1e-5


def test_wenet_rel_pos_is_padding_invariant():
    model = tiny("wenet_rel_pos")
    feats = torch.randn(2, 80, 20)
    with torch.no_grad():
        batch, lens = model.encode(feats, torch.tensor([80, 57]))
        alone, _ = model.encode(feats[1:, :57], torch.tensor([57]))
    n = int(lens[1])
    assert (batch[1, :n] - alone[0]).abs().max() < 1e-5


def test_legacy_rel_pos_depends_on_padded_length_as_in_espnet():
    # ESPnet's legacy table gives query i / key j <= i the position max_len - T + i - j with
    # T the padded length, so a padded batch does not give the unpadded numbers. The
    # conversion keeps that behaviour (it is what the imported model was trained with).
    model = tiny("legacy_rel_pos")
    feats = torch.randn(2, 80, 20)
    with torch.no_grad():
        batch, lens = model.encode(feats, torch.tensor([80, 57]))
        alone, _ = model.encode(feats[1:, :57], torch.tensor([57]))
    assert (batch[1, : int(lens[1])] - alone[0]).abs().max() > 1e-4


@pytest.mark.parametrize("variant", ["legacy_rel_pos", "wenet_rel_pos"])
def test_encoder_onnx_parity_at_other_lengths(tmp_path, variant):
    assert_encoder_onnx_parity(tiny(variant, layer_norm_eps=1e-5), tmp_path / "enc.onnx")


def test_layer_norm_eps_reaches_every_layer_norm():
    model = tiny("wenet_rel_pos", layer_norm_eps=1e-5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    default = tiny("rel_pos")
    assert all(m.eps == 1e-12 for m in default.modules() if isinstance(m, torch.nn.LayerNorm))
