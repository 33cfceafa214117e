"""Feature loading and collation for ESPnet1-json batches.

A batch is a list of utterance keys (see ``batching.py``). ``BatchDataset`` turns the batches
of one epoch, in the order a rank trains them, into padded tensors: features are read with
kaldiio from their ``ark:offset`` (open archives are cached per process, not reopened per
utterance), targets come from the json ``tokenid`` field. SpecAugment randomness is derived from
``(seed, epoch, position)``, so batch ``i`` of an epoch is augmented identically whether the
epoch runs straight through, is resumed in the middle, or is read by a worker process.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import kaldiio
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from e2e_asr.data.specaug import SpecAugment

IGNORE_ID = -1


class DataError(ValueError):
    """A json entry or feature file that cannot be used; the message names it."""


def token_ids(key: str, info: dict[str, Any]) -> list[int]:
    try:
        return [int(t) for t in str(info["output"][0]["tokenid"]).split()]
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"utterance {key}: bad or missing output[0].tokenid ({exc})") from exc


def ref_text(info: dict[str, Any]) -> str | None:
    """The json's ``output[0].text`` (the data dir's normalised text), or None."""
    try:
        text = info["output"][0].get("text")
    except (KeyError, IndexError, AttributeError):
        return None
    return text if isinstance(text, str) else None


def feat_dim(utts: Mapping[str, dict[str, Any]], where: str) -> int:
    """The feature dimension shared by all utterances (error naming the odd one out)."""
    dim = None
    for key, info in utts.items():
        try:
            d = int(info["input"][0]["shape"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: utterance {key}: bad input[0].shape ({exc})") from exc
        if dim is None:
            dim = d
        elif d != dim:
            raise DataError(f"{where}: utterance {key} has feature dim {d}, others have {dim}")
    if dim is None:
        raise DataError(f"{where}: no utterances")
    return dim


def collate(
    feats: list[np.ndarray] | list[torch.Tensor], ys: list[list[int]]
) -> dict[str, torch.Tensor]:
    """Zero-padded ``feats [B,T,D]``, ``feat_lens [B]``, ``ys [B,L]`` padded with -1."""
    tensors = [torch.as_tensor(f, dtype=torch.float32) for f in feats]
    lens = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    out = torch.zeros(len(tensors), int(lens.max()), tensors[0].shape[1])
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    max_l = max(1, max(len(y) for y in ys))
    ys_pad = torch.full((len(ys), max_l), IGNORE_ID, dtype=torch.int64)
    for i, y in enumerate(ys):
        ys_pad[i, : len(y)] = torch.tensor(y, dtype=torch.int64)
    return {"feats": out, "feat_lens": lens, "ys": ys_pad}


class BatchDataset(Dataset):
    """Item ``i`` = the padded batch ``batches[i]`` (optionally augmented)."""

    def __init__(
        self,
        utts: Mapping[str, dict[str, Any]],
        batches: list[list[str]],
        specaug: SpecAugment | None = None,
        rng_key: tuple[int, ...] = (0,),
        positions: list[int] | None = None,
    ) -> None:
        self.utts = utts
        self.batches = batches
        self.specaug = specaug if specaug else None
        self.rng_key = tuple(int(k) for k in rng_key)
        # position of each batch within the epoch, which keys its augmentation randomness
        self.positions = positions if positions is not None else list(range(len(batches)))
        self._fds: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"] = {}  # open file handles do not travel to worker processes
        return state

    def __len__(self) -> int:
        return len(self.batches)

    def load(self, key: str) -> np.ndarray:
        info = self.utts[key]
        try:
            spec = info["input"][0]["feat"]
        except (KeyError, IndexError) as exc:
            raise DataError(f"utterance {key}: missing input[0].feat") from exc
        try:
            mat = kaldiio.load_mat(spec, fd_dict=self._fds)
        except Exception as exc:
            raise DataError(f"utterance {key}: cannot read features {spec}: {exc}") from exc
        mat = np.array(mat, dtype=np.float32)  # a writable copy, not a view of the file buffer
        expect = info["input"][0].get("shape")
        if expect is not None and list(mat.shape) != [int(v) for v in expect]:
            raise DataError(
                f"utterance {key}: features {spec} have shape {list(mat.shape)}, json says {expect}"
            )
        return mat

    def __getitem__(self, i: int) -> dict[str, Any]:
        keys = self.batches[i]
        feats: list[Any] = [self.load(k) for k in keys]
        if self.specaug is not None:
            rng = np.random.default_rng([*self.rng_key, self.positions[i]])
            feats = [self.specaug(torch.from_numpy(f), rng) for f in feats]
        batch = collate(feats, [token_ids(k, self.utts[k]) for k in keys])
        batch["keys"] = keys
        # the reference text, for a dev CER counted like stage 6's (OOV characters included)
        batch["texts"] = [ref_text(self.utts[k]) for k in keys]
        return batch

    def close(self) -> None:
        for fd in self._fds.values():
            fd.close()
        self._fds.clear()


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """SIGINT blocked in this thread for the block, delivered when it ends (main thread only).

    A Ctrl-C that lands while a process forks is lost in the parent: CPython raises the
    KeyboardInterrupt inside fork's after-in-parent hooks (logging's lock release), which
    print it as "Exception ignored" and go on. Held back, it arrives after the fork, where the
    caller's ``except KeyboardInterrupt`` sees it. A child forked meanwhile inherits the
    blocked signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class _Loader(DataLoader):
    """A DataLoader that talks to its workers with Ctrl-C held back (``ctrl_c_held``): while it
    forks them, and while it takes each batch from them. The workers keep SIGINT blocked for
    life and never die of their own copy of it; the training process gets the KeyboardInterrupt
    between batches, never halfway through receiving one (a worker whose batch was cut off
    printed a traceback from its sending thread), and stops them."""

    def __iter__(self):
        with ctrl_c_held():
            batches = super().__iter__()
        while True:
            with ctrl_c_held():
                batch = next(batches, _END)
            if batch is _END:
                return
            yield batch


_END = object()


def make_loader(dataset: BatchDataset, num_workers: int, pin_memory: bool = False) -> DataLoader:
    """Iterates the batches in order. A private generator keeps DataLoader from drawing its
    worker seed from the global torch RNG, which would shift dropout after a resume. Ctrl-C
    goes to the calling process, never to a worker (``_Loader``)."""
    return _Loader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=None,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
        pin_memory=pin_memory,  # page-locked batches copy to a GPU asynchronously
    )
