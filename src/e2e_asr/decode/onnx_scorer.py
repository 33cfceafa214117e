"""Scorer over the exported encoder/decoder ONNX graphs, run with ONNX Runtime.

The tensor names here are the export contract: ``e2e_asr.export.onnx_export`` writes graphs
with exactly these inputs and outputs.
"""

from __future__ import annotations

import os

import numpy as np

ENCODER_INPUTS = ("feats", "feat_lens")
ENCODER_OUTPUTS = ("enc", "enc_lens", "ctc_logp")
DECODER_INPUTS = ("ys_in", "ys_in_lens", "enc", "enc_lens")
DECODER_OUTPUTS = ("logp",)


def make_session(path: str | os.PathLike, num_threads: int = 0):  # -> ort.InferenceSession
    """A CPU session; ``num_threads`` 0 lets ONNX Runtime choose."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxScorer:
    def __init__(self, encoder_session, decoder_session, vocab_size: int) -> None:
        self.enc_sess = encoder_session
        self.dec_sess = decoder_session
        self.vocab_size = int(vocab_size)
        self.eos = self.vocab_size - 1
        names = [i.name for i in encoder_session.get_inputs()]
        if tuple(names) != ENCODER_INPUTS:
            raise ValueError(f"encoder ONNX graph has inputs {names}, expected {ENCODER_INPUTS}")
        inputs = decoder_session.get_inputs()
        names = [i.name for i in inputs]
        if tuple(names) != DECODER_INPUTS:
            raise ValueError(f"decoder ONNX graph has inputs {names}, expected {DECODER_INPUTS}")
        # Graphs exported before the encoder batch got its own dimension name cannot take one
        # encoder row for many hypotheses (ORT plans buffers by dimension name): repeat it.
        self.broadcast = inputs[2].shape[0] != inputs[0].shape[0]

    @classmethod
    def from_files(
        cls,
        encoder_path: str | os.PathLike,
        decoder_path: str | os.PathLike,
        vocab_size: int,
        num_threads: int = 0,
    ) -> OnnxScorer:
        return cls(
            make_session(encoder_path, num_threads),
            make_session(decoder_path, num_threads),
            vocab_size,
        )

    def encode(
        self, feats: np.ndarray, lens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        enc, enc_lens, logp = self.enc_sess.run(
            list(ENCODER_OUTPUTS),
            {
                "feats": np.ascontiguousarray(feats, dtype=np.float32),
                "feat_lens": np.asarray(lens, dtype=np.int64),
            },
        )
        return enc, enc_lens.astype(np.int64), logp

    def decoder_logprobs(
        self, ys_in: np.ndarray, ys_lens: np.ndarray, enc: np.ndarray, enc_lens: np.ndarray
    ) -> np.ndarray:
        if not self.broadcast and enc.shape[0] == 1 and ys_in.shape[0] > 1:
            enc = np.repeat(enc, ys_in.shape[0], axis=0)
            enc_lens = np.repeat(enc_lens, ys_in.shape[0], axis=0)
        (logp,) = self.dec_sess.run(
            list(DECODER_OUTPUTS),
            {
                "ys_in": np.ascontiguousarray(ys_in, dtype=np.int64),
                "ys_in_lens": np.asarray(ys_lens, dtype=np.int64),
                "enc": np.ascontiguousarray(enc, dtype=np.float32),
                "enc_lens": np.asarray(enc_lens, dtype=np.int64),
            },
        )
        return logp

    def take(self, enc: np.ndarray, index: np.ndarray) -> np.ndarray:
        return enc[np.asarray(index, dtype=np.int64)]
