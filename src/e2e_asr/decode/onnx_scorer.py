"""Scorer over the exported encoder/decoder ONNX graphs, run with ONNX Runtime.

The tensor names here are the export contract: ``e2e_asr.export.onnx_export`` writes graphs
with exactly these inputs and outputs. The incremental decoder is two more graphs,
``decoder_memory`` (source-attention keys/values of the encoder output, once per utterance)
and ``decoder_step`` (new positions on top of a self-attention key/value cache); export
directories made before they existed decode with the whole-prefix ``decoder`` graph.
"""

from __future__ import annotations

import os

import numpy as np

ENCODER_INPUTS = ("feats", "feat_lens")
ENCODER_OUTPUTS = ("enc", "enc_lens", "ctc_logp")
DECODER_INPUTS = ("ys_in", "ys_in_lens", "enc", "enc_lens")
DECODER_OUTPUTS = ("logp",)
DECODER_MEMORY_INPUTS = ("enc",)
DECODER_MEMORY_OUTPUTS = ("mem_k", "mem_v")
DECODER_STEP_INPUTS = (
    "ys",
    "positions",
    "mask",
    "cache_k",
    "cache_v",
    "mem_k",
    "mem_v",
    "enc_lens",
)
DECODER_STEP_OUTPUTS = ("logp", "new_cache_k", "new_cache_v")


def make_session(path: str | os.PathLike, num_threads: int = 0):  # -> ort.InferenceSession
    """A CPU session; ``num_threads`` 0 lets ONNX Runtime choose."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _check_names(session, kind: str, expected: tuple[str, ...]) -> None:
    names = tuple(i.name for i in session.get_inputs())
    if names != expected:
        raise ValueError(f"{kind} ONNX graph has inputs {list(names)}, expected {expected}")


class OnnxScorer:
    def __init__(
        self,
        encoder_session,
        decoder_session,
        vocab_size: int,
        memory_session=None,
        step_session=None,
    ) -> None:
        self.enc_sess = encoder_session
        self.dec_sess = decoder_session
        self.mem_sess = memory_session
        self.step_sess = step_session
        if (memory_session is None) != (step_session is None):
            raise ValueError("the incremental decoder needs both decoder_memory and decoder_step")
        # the searches use decoder_step/decoder_memory when this is true
        self.incremental = step_session is not None
        if self.incremental:
            _check_names(memory_session, "decoder_memory", DECODER_MEMORY_INPUTS)
            _check_names(step_session, "decoder_step", DECODER_STEP_INPUTS)
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
        memory_path: str | os.PathLike | None = None,
        step_path: str | os.PathLike | None = None,
    ) -> OnnxScorer:
        """Sessions over the graph files; without ``memory_path``/``step_path`` the searches
        run the whole-prefix decoder at every step."""
        return cls(
            make_session(encoder_path, num_threads),
            make_session(decoder_path, num_threads),
            vocab_size,
            None if memory_path is None else make_session(memory_path, num_threads),
            None if step_path is None else make_session(step_path, num_threads),
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

    # -- incremental decoder (see scorer.IncrementalScorer) ----------------------------------

    def decoder_memory(self, enc: np.ndarray, enc_lens: np.ndarray) -> tuple:
        mem_k, mem_v = self.mem_sess.run(
            list(DECODER_MEMORY_OUTPUTS), {"enc": np.ascontiguousarray(enc, dtype=np.float32)}
        )
        return mem_k, mem_v, np.asarray(enc_lens, dtype=np.int64)

    def decoder_step(
        self,
        ys: np.ndarray,
        positions: np.ndarray,
        mask: np.ndarray,
        cache: tuple[np.ndarray, np.ndarray] | None,
        memory: tuple,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        mem_k, mem_v, enc_lens = memory
        if cache is None:
            blocks, _, heads, _, d_k = mem_k.shape
            empty = np.zeros((blocks, ys.shape[0], heads, 0, d_k), dtype=np.float32)
            cache = (empty, empty)
        logp, k, v = self.step_sess.run(
            list(DECODER_STEP_OUTPUTS),
            {
                "ys": np.ascontiguousarray(ys, dtype=np.int64),
                "positions": np.ascontiguousarray(positions, dtype=np.int64),
                "mask": np.ascontiguousarray(mask, dtype=np.bool_),
                "cache_k": cache[0],
                "cache_v": cache[1],
                "mem_k": mem_k,
                "mem_v": mem_v,
                "enc_lens": enc_lens,
            },
        )
        return logp, (k, v)

    def take_cache(
        self, cache: tuple[np.ndarray, np.ndarray], index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        index = np.asarray(index, dtype=np.int64)
        return cache[0][:, index], cache[1][:, index]
