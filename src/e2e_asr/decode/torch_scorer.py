"""Scorer over a PyTorch ``E2EModel`` (CPU, inference mode)."""

from __future__ import annotations

import numpy as np
import torch

from e2e_asr.model import E2EModel


class TorchScorer:
    def __init__(self, model: E2EModel, incremental: bool = True) -> None:
        """``incremental`` False makes the searches run the whole-prefix decoder at every
        step (the way before the key/value cache; kept for comparisons)."""
        self.model = model.eval()
        self.incremental = incremental
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

    # -- incremental decoder (see scorer.IncrementalScorer) ----------------------------------

    @torch.inference_mode()
    def decoder_memory(self, enc: torch.Tensor, enc_lens: np.ndarray) -> tuple:
        mem_k, mem_v = self.model.decoder_memory(enc)
        return mem_k, mem_v, torch.from_numpy(np.asarray(enc_lens, dtype=np.int64))

    @torch.inference_mode()
    def decoder_step(
        self,
        ys: np.ndarray,
        positions: np.ndarray,
        mask: np.ndarray,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        memory: tuple,
    ) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor]]:
        mem_k, mem_v, enc_lens = memory
        if cache is None:
            blocks, _, heads, _, d_k = mem_k.shape
            empty = mem_k.new_zeros((blocks, ys.shape[0], heads, 0, d_k))
            cache = (empty, empty)
        logp, k, v = self.model.decoder_step(
            torch.from_numpy(np.asarray(ys, dtype=np.int64)),
            torch.from_numpy(np.asarray(positions, dtype=np.int64)),
            torch.from_numpy(np.asarray(mask, dtype=np.bool_)),
            cache[0],
            cache[1],
            mem_k,
            mem_v,
            enc_lens,
        )
        return logp.numpy(), (k, v)

    def take_cache(
        self, cache: tuple[torch.Tensor, torch.Tensor], index: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(np.asarray(index, dtype=np.int64))
        return cache[0][:, i], cache[1][:, i]
