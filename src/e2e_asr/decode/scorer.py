"""The interface the searches need from a model, independent of the runtime.

Implementations: ``torch_scorer.TorchScorer`` (an ``E2EModel``) and
``onnx_scorer.OnnxScorer`` (encoder/decoder ONNX Runtime sessions). A scorer whose
``incremental`` attribute is true also implements ``IncrementalScorer``: the searches then
decode with a self-attention key/value cache instead of re-running the whole prefix.

Arrays crossing the interface are numpy; the encoder output stays in the backend's own type
(``enc``) so the torch path does not copy it back and forth on every beam step.
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


class IncrementalScorer(Scorer, Protocol):
    """The incremental decoder: same log-probabilities as ``decoder_logprobs`` (up to float
    rounding), computed position by position on top of a key/value cache.

    ``memory`` and ``cache`` are backend-native and opaque to the searches; a ``None`` cache
    is the empty one (no position decoded yet)."""

    incremental: bool

    def decoder_memory(self, enc: Any, enc_lens: np.ndarray) -> Any:
        """Source-attention keys/values of ``enc [B, T', A]`` (B = 1 for one utterance's
        hypotheses), computed once and passed to every ``decoder_step``."""
        ...

    def decoder_step(
        self, ys: np.ndarray, positions: np.ndarray, mask: np.ndarray, cache: Any, memory: Any
    ) -> tuple[np.ndarray, Any]:
        """``S`` new tokens ``ys`` int64 [N, S] at ``positions`` [N, S], attending to the
        ``P`` cached positions and themselves as ``mask`` bool [N, S, P+S] says -> (float32
        [N, S, V] log-probabilities of the next token, the cache of all P+S positions)."""
        ...

    def take_cache(self, cache: Any, index: np.ndarray) -> Any:
        """Hypotheses ``index`` (repeats allowed) of a cache."""
        ...
