"""The tiny model config the tests build their models from; each test overrides what it needs.

`one_thread` is an autouse fixture: a test module that imports it runs each of its tests on
one torch thread.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch


def tiny_model_config(**overrides: Any) -> dict[str, Any]:
    """A 2-block transformer, 16-dim attention with 2 heads, FF 32, 20-dim input, 10 units.

    Overrides replace the values in place (key order kept) or are added at the end.
    """
    mc: dict[str, Any] = dict(
        idim=20,
        odim=10,
        encoder_attention_dim=16,
        encoder_attention_heads=2,
        encoder_linear_units=32,
        encoder_num_blocks=2,
        decoder_attention_dim=16,
        decoder_attention_heads=2,
        decoder_linear_units=32,
        decoder_num_block=2,
    )
    mc.update(overrides)
    return mc


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: extra threads only contend on a shared machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
