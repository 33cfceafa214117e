"""Scorer over a PyTorch ``E2EModel`` (CPU, inference mode)."""

from __future__ import annotations

import numpy as np
import torch

from e2e_asr.model import E2EModel


class TorchScorer:
    def __init__(self, model: E2EModel) -> None:
        self.model = model.eval()
        self.vocab_size = int(model.odim)
        self.eos = int(model.eos)

    @torch.inference_mode()
    def encode(
        self, feats: np.ndarray, lens: np.ndarray
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        enc, enc_lens = self.model.encode(
            torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
            torch.from_numpy(np.asarray(lens, dtype=np.int64)),
        )
        logp = self.model.ctc_log_probs(enc)
        return enc, enc_lens.numpy().astype(np.int64), logp.float().numpy()

    @torch.inference_mode()
    def decoder_logprobs(
        self, ys_in: np.ndarray, ys_lens: np.ndarray, enc: torch.Tensor, enc_lens: np.ndarray
    ) -> np.ndarray:
        out = self.model.decoder_logprobs(
            torch.from_numpy(np.asarray(ys_in, dtype=np.int64)),
            torch.from_numpy(np.asarray(ys_lens, dtype=np.int64)),
            enc,
            torch.from_numpy(np.asarray(enc_lens, dtype=np.int64)),
        )
        return out.float().numpy()

    def take(self, enc: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        return enc[torch.from_numpy(np.asarray(index, dtype=np.int64))]
