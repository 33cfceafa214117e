"""The interface the searches need from a model, independent of the runtime.

Implementations: ``torch_scorer.TorchScorer`` (an ``E2EModel``) and
``onnx_scorer.OnnxScorer`` (encoder/decoder ONNX Runtime sessions). Arrays crossing the
interface are numpy; the encoder output stays in the backend's own type (``enc``) so the torch
path does not copy it back and forth on every beam step.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    vocab_size: int
    eos: int  # = sos = vocab_size - 1

    def encode(self, feats: np.ndarray, lens: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """feats float32 [B, T, D], lens int64 [B] ->
        (enc [B, T', A] backend-native, enc_lens int64 [B], ctc log-probs float32 [B, T', V])."""
        ...

    def decoder_logprobs(
        self, ys_in: np.ndarray, ys_lens: np.ndarray, enc: Any, enc_lens: np.ndarray
    ) -> np.ndarray:
        """ys_in int64 [N, L] (sos first), ys_lens [N], enc [N or 1, T', A], enc_lens [N or 1]
        -> float32 [N, L, V] log-probabilities of the next token at every position.

        With a single encoder row, every hypothesis attends to it (broadcast): the searches
        score all hypotheses of one utterance that way."""
        ...

    def take(self, enc: Any, index: np.ndarray) -> Any:
        """Rows ``index`` (repeats allowed) of a backend-native encoder output."""
        ...
