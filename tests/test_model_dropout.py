"""The CPU dropout keeps nn.Dropout's contract: rate, scaling, eval identity, seeding."""

import pytest
import torch

from e2e_asr.model.dropout import Dropout, fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(400_003)  # not a multiple of 4: the tail of the bit buffer is cut
    y = fast_dropout(x, p, training=True)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.005)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)


def test_masks_are_independent_across_lanes_and_calls():
    torch.manual_seed(0)
    x = torch.ones(4, 50_000)
    a, b = fast_dropout(x, 0.5, True), fast_dropout(x, 0.5, True)
    # The four 16-bit lanes of a 64-bit draw land in neighbouring elements: each lane
    # must drop at the requested rate and the two calls must differ.
    lanes = (a.view(-1, 4) == 0).float().mean(0)
    assert torch.allclose(lanes, torch.full((4,), 0.5), atol=0.01)
    assert ((a == 0) != (b == 0)).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_seed_reproduces_and_eval_is_identity():
    x = torch.randn(3, 7, 11)
    torch.manual_seed(5)
    a = fast_dropout(x, 0.1, True)
    torch.manual_seed(5)
    b = fast_dropout(x, 0.1, True)
    assert torch.equal(a, b)
    module = Dropout(0.1).eval()
    assert module(x) is x
    assert fast_dropout(x, 0.0, True) is x


def test_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(5, 64, requires_grad=True)
    y = fast_dropout(x, 0.2, True)
    y.sum().backward()
    expected = (y != 0).float() / 0.8
    assert torch.allclose(x.grad, expected)
    with pytest.raises(ValueError, match="dropout rate"):
        Dropout(1.5)
