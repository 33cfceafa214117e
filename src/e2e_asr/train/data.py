"""The training and dev utterances of a run, read lazily, and source-data mixing.

``json_dir`` is stage 2's output: the train shards it recorded in ``train_shards.txt`` (one
file name per line; older directories without it: ``train.{1..json_nj}.json`` with
``--json-nj``, else every ``train.N.json``), and ``dev.json``.

Memory does not grow with whole json entries: each shard is scanned once, streaming, into an
index (``UttIndex``) that keeps per utterance only its key, where its entry lies in the shard
(byte offset and length) and the two lengths batching needs. Batching sees shape-only entries
built on the fly (``MetaView``); the feature loader reads an utterance's entry from its shard
when its batch is loaded (``EntryView``), in the worker process that loads it.

With ``--mix-json-dir D --mix-ratio R`` every epoch also trains on ``R x (number of target train
utterances)`` utterances drawn without replacement from the train json of ``D`` (the source
domain), a different draw each epoch, fixed by (seed, epoch). Mixing some source data back in
is what keeps fine-tuning from forgetting the original domain.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2e_asr.data.batching import clean_data, make_batchset
from e2e_asr.data.loader import DataError, token_ids

log = logging.getLogger(__name__)

MIX_PREFIX = "mix/"  # source keys are prefixed so they can never collide with target keys
SHARD_RECORD = "train_shards.txt"  # written by stage 2 (data/jsonprep.py)
_WS = re.compile(r"[ \t\n\r]*")
_SHARD_RE = re.compile(r"^train\.(\d+)\.json$")


# ----------------------------------------------------------------------------- shard list
def train_shards(json_dir: Path, json_nj: int | None = None) -> list[Path]:
    """The train json files of ``json_dir``, from stage 2's record when there is one."""
    record = json_dir / SHARD_RECORD
    if record.is_file():
        names = [n.strip() for n in record.read_text(encoding="utf-8").splitlines() if n.strip()]
        if json_nj is not None and json_nj != len(names):
            raise DataError(
                f"--json-nj {json_nj}, but stage 2 recorded {len(names)} train json files in "
                f"{record}; leave --json-nj out (stage 3 reads the record)"
            )
        paths = [json_dir / n for n in names]
    elif json_nj is not None:
        if json_nj < 1:
            raise DataError(f"--json-nj must be >= 1, got {json_nj}")
        paths = [json_dir / f"train.{i}.json" for i in range(1, json_nj + 1)]
    else:
        found = [(int(m.group(1)), p) for p in json_dir.glob("train.*.json")
                 if (m := _SHARD_RE.match(p.name))]  # fmt: skip
        paths = [p for _, p in sorted(found)]
        if not paths:
            raise DataError(
                f"{json_dir}: no train.N.json files (stage 2 writes them: run.sh --stage 2)"
            )
    for path in paths:
        if not path.is_file():
            others = sorted(p.name for p in json_dir.glob("train.*.json"))
            raise DataError(f"{path}: missing (found {', '.join(others) or 'none'})")
    return paths


# ----------------------------------------------------------------------------- scanning
class _Scanner:
    """Streams one ESPnet json file: ``(key, byte offset, byte length, entry)`` of every
    utterance under ``"utts"``, holding about one read chunk in memory."""

    def __init__(self, path: Path, chunk: int = 1 << 20) -> None:
        self.path = path
        self.fh = open(path, "rb")  # noqa: SIM115 - closed in entries()
        self.chunk = chunk
        self.dec = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0  # char index into buf
        # a cursor (char index into buf, its file byte offset) that only moves forward, so
        # byte offsets cost O(entry), not O(buffer)
        self.cur_i = 0
        self.cur_b = 0
        self.eof = False
        self.json = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self.fh.read(self.chunk)
        if not data:
            self.eof = True
            self.buf += self.dec.decode(b"", final=True)
            return False
        # drop what is consumed; the cursor moves to the new buf[0]
        b = self._byte(self.pos)
        self.buf = self.buf[self.pos :] + self.dec.decode(data)
        self.pos = 0
        self.cur_i, self.cur_b = 0, b
        return True

    def _byte(self, i: int) -> int:
        """File byte offset of ``buf[i]`` (``i`` never behind the cursor)."""
        if i < self.cur_i:
            return self.cur_b - len(self.buf[i : self.cur_i].encode("utf-8"))
        self.cur_b += len(self.buf[self.cur_i : i].encode("utf-8"))
        self.cur_i = i
        return self.cur_b

    def _error(self, what: str) -> DataError:
        byte = self._byte(self.pos)
        with open(self.path, "rb") as fh:
            line = fh.read(byte).count(b"\n") + 1
        return DataError(f"{self.path}:{line}: invalid json ({what})")

    def _skip_ws(self) -> None:
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._more():
                return

    def _char(self) -> str:
        self._skip_ws()
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def _expect(self, c: str) -> None:
        if self._char() != c:
            raise self._error(f"expected {c!r}")
        self.pos += 1

    def _value(self) -> tuple[Any, int, int]:
        self._skip_ws()
        while True:
            try:
                obj, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue
                raise self._error(exc.msg) from None
            if end == len(self.buf) and not self.eof and not isinstance(obj, dict | list | str):
                # a number or literal may continue in the next chunk
                if self._more():
                    continue
            start = self.pos
            self.pos = end
            return obj, start, end

    def entries(self) -> Iterator[tuple[str, int, int, Any]]:
        try:
            self._expect("{")
            found = False
            while True:
                c = self._char()
                if c == "}":
                    break
                key, _, _ = self._value()
                if not isinstance(key, str):
                    raise self._error("expected a key")
                self._expect(":")
                if key != "utts":
                    self._value()
                else:
                    found = True
                    yield from self._utts()
                c = self._char()
                if c == ",":
                    self.pos += 1
                elif c != "}":
                    raise self._error("expected ',' or '}'")
            if not found:
                raise DataError(f"{self.path}: expected an object with a 'utts' mapping")
        finally:
            self.fh.close()

    def _utts(self) -> Iterator[tuple[str, int, int, Any]]:
        self._expect("{")
        if self._char() == "}":
            self.pos += 1
            return
        while True:
            key, _, _ = self._value()
            if not isinstance(key, str):
                raise self._error("expected an utterance key")
            self._expect(":")
            entry, start, end = self._value()
            b0 = self._byte(start)
            yield key, b0, self._byte(end) - b0, entry
            c = self._char()
            self.pos += 1
            if c == "}":
                return
            if c != ",":
                self.pos -= 1
                raise self._error("expected ',' or '}'")


def iter_json_entries(path: Path) -> Iterator[tuple[str, int, int, Any]]:
    """``(key, byte offset, byte length, entry)`` of every utterance of an ESPnet json."""
    return _Scanner(Path(path)).entries()


# ----------------------------------------------------------------------------- the index
@dataclass
class UttIndex:
    """Per utterance: key, shard, byte offset/length of its entry, input/output lengths."""

    shards: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    pos: dict[str, int] = field(default_factory=dict)
    idim: int | None = None
    odim: int | None = None
    _shard: array = field(default_factory=lambda: array("i"))
    _offset: array = field(default_factory=lambda: array("q"))
    _length: array = field(default_factory=lambda: array("i"))
    _ilen: array = field(default_factory=lambda: array("i"))
    _olen: array = field(default_factory=lambda: array("i"))
    token_range: tuple[int, str, int, str] | None = None  # min id, its key, max id, its key

    def add_shard(self, path: Path, prefix: str = "") -> int:
        """Index every utterance of ``path`` (keys get ``prefix``); returns how many."""
        sid = len(self.shards)
        self.shards.append(str(path))
        n = 0
        for key, off, length, entry in iter_json_entries(path):
            k = prefix + key
            if k in self.pos:
                raise DataError(f"{path}: utterance {key} also appears in an earlier json file")
            try:
                ishape = entry["input"][0]["shape"]
                oshape = entry["output"][0]["shape"]
                ilen, idim = int(ishape[0]), int(ishape[1])
                olen, odim = int(oshape[0]), int(oshape[1])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise DataError(f"{path}: utterance {key}: bad input/output shape ({exc})") from exc
            if self.idim is None:
                self.idim, self.odim = idim, odim
            elif idim != self.idim:
                raise DataError(
                    f"{path}: utterance {key} has feature dim {idim}, others have {self.idim}"
                )
            ids = token_ids(key, entry)
            if ids:
                lo, hi = min(ids), max(ids)
                r = self.token_range
                if r is None:
                    self.token_range = (lo, k, hi, k)
                else:
                    self.token_range = (
                        *((lo, k) if lo < r[0] else (r[0], r[1])),
                        *((hi, k) if hi > r[2] else (r[2], r[3])),
                    )
            self.pos[k] = len(self.keys)
            self.keys.append(k)
            self._shard.append(sid)
            self._offset.append(off)
            self._length.append(length)
            self._ilen.append(ilen)
            self._olen.append(olen)
            n += 1
        return n

    def __len__(self) -> int:
        return len(self.keys)

    def shape_entry(self, key: str) -> dict[str, Any]:
        i = self.pos[key]
        return {
            "input": [{"shape": [self._ilen[i], self.idim]}],
            "output": [{"shape": [self._olen[i], self.odim]}],
        }

    def location(self, key: str) -> tuple[str, int, int]:
        i = self.pos[key]
        return self.shards[self._shard[i]], self._offset[i], self._length[i]

    def nbytes(self) -> int:
        """Memory of the per-utterance arrays (keys and the key->row dict not included)."""
        return sum(a.itemsize * len(a) for a in (self._shard, self._offset, self._length,
                                                  self._ilen, self._olen))  # fmt: skip


def build_index(paths: list[Path], prefix: str = "") -> UttIndex:
    index = UttIndex()
    for path in paths:
        index.add_shard(path, prefix)
    return index


class MetaView(Mapping):
    """Shape-only entries (``input[0].shape``, ``output[0].shape``) of ``keys``: what
    ``clean_data`` and ``make_batchset`` read, built on the fly from the index."""

    def __init__(self, index: UttIndex, keys: list[str] | None = None) -> None:
        self.index = index
        self.keys_ = index.keys if keys is None else keys

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.index.shape_entry(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


class EntryView(Mapping):
    """Whole json entries, read from their shard on access (one open file per shard and
    process; nothing open travels to loader workers)."""

    def __init__(self, *indexes: UttIndex) -> None:
        self.indexes = indexes
        self._fds: dict[str, Any] = {}
        # a batch's entries are read twice (features, then token ids): keep the last few
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}, "_recent": OrderedDict()}

    def _find(self, key: str) -> UttIndex:
        for index in self.indexes:
            if key in index.pos:
                return index
        raise KeyError(key)

    def __getitem__(self, key: str) -> dict[str, Any]:
        hit = self._recent.get(key)
        if hit is not None:
            return hit
        shard, off, length = self._find(key).location(key)
        fh = self._fds.get(shard)
        if fh is None:
            fh = self._fds[shard] = open(shard, "rb")  # noqa: SIM115 - closed in close()
        fh.seek(off)
        try:
            entry = json.loads(fh.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(
                f"{shard}: utterance {key}: entry changed since indexing ({exc})"
            ) from exc
        self._recent[key] = entry
        if len(self._recent) > 512:
            self._recent.popitem(last=False)
        return entry

    def __iter__(self) -> Iterator[str]:
        for index in self.indexes:
            yield from index.keys

    def __len__(self) -> int:
        return sum(len(i) for i in self.indexes)

    def __contains__(self, key: object) -> bool:
        return any(key in i.pos for i in self.indexes)

    def close(self) -> None:
        for fh in self._fds.values():
            fh.close()
        self._fds.clear()


# ----------------------------------------------------------------------------- the run's data
def clean_keys(
    index: UttIndex, keys: list[str], jconfig: dict[str, Any], subsample: int, name: str
) -> tuple[list[str], dict[str, int]]:
    """``clean_data``'s rule over ``keys``, a chunk at a time (nothing whole in memory)."""
    kept: list[str] = []
    total: dict[str, int] = {}
    quiet = logging.getLogger("e2e_asr.data.batching")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one summary line below instead of one per chunk
    try:
        for i in range(0, len(keys), 2000):
            part, counts = clean_data(MetaView(index, keys[i : i + 2000]), jconfig, subsample)
            kept.extend(part)
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
    finally:
        quiet.setLevel(level)
    dropped = sum(total.values())
    if dropped:
        detail = ", ".join(f"{k}: {v}" for k, v in total.items() if v)
        log.info("%s: clean_data dropped %d of %d utterances (%s)", name, dropped, len(keys),
                 detail)  # fmt: skip
    return kept, total


def draw_source(
    source: Mapping[str, Any], n_target: int, ratio: float, seed: int, epoch: int
) -> dict[str, Any]:
    """``round(ratio * n_target)`` source utterances for ``epoch`` (all of them if fewer)."""
    if ratio <= 0 or not source:
        return {}
    want = int(round(ratio * n_target))
    keys = sorted(source)
    if want >= len(keys):
        if want > len(keys):
            log.warning(
                "mix: %d source utterances wanted, only %d exist; using all", want, len(keys)
            )
        return {k: source[k] for k in keys}
    rng = np.random.default_rng([int(seed), int(epoch), 0x6D6978])
    picked = rng.choice(len(keys), size=want, replace=False)
    return {keys[i]: source[keys[i]] for i in sorted(picked.tolist())}


class TrainData:
    """Target train shards, dev set and (optionally) the source domain, indexed lazily."""

    def __init__(
        self,
        json_dir: Path,
        json_nj: int | None = None,
        mix_json_dir: Path | None = None,
        mix_ratio: float = 0.0,
    ) -> None:
        self.json_dir = json_dir
        self.shards = train_shards(json_dir, json_nj)
        self.where = f"{json_dir}/train.*.json"
        self.train = build_index(self.shards)
        if not len(self.train):
            raise DataError(f"{json_dir}: the train json files hold no utterances")
        dev_path = json_dir / "dev.json"
        if not dev_path.is_file():
            raise DataError(f"{dev_path}: missing (stage 2 writes it)")
        self.dev_path = dev_path
        self.dev = build_index([dev_path])
        self.dim = int(self.train.idim or 0)
        if len(self.dev) and self.dev.idim != self.dim:
            raise DataError(f"{dev_path}: feature dim {self.dev.idim}, train has {self.dim}")
        self.mix_ratio = float(mix_ratio)
        self.mix_dir = mix_json_dir if mix_ratio > 0 else None
        self.source = UttIndex()
        self.source_shards: list[Path] = []
        if self.mix_dir is not None:
            self.source_shards = train_shards(self.mix_dir)
            self.source = build_index(self.source_shards, MIX_PREFIX)
            if self.source.idim != self.dim:
                raise DataError(
                    f"{self.mix_dir}: source features have dim {self.source.idim}, "
                    f"target {self.dim}"
                )
        self.entries = EntryView(self.train, self.dev, self.source)
        self.target_keys: list[str] = []
        self.dev_keys: list[str] = []
        self._fixed: list[list[str]] | None = None

    # the parts of the run's fingerprint that come from the data (names and sizes, no paths)
    def identity(self) -> list[dict[str, Any]]:
        files = [*self.shards, self.dev_path]
        return [{"name": p.name, "size": p.stat().st_size} for p in files]

    def mix_identity(self) -> list[Any] | None:
        if self.mix_dir is None:
            return None
        return [[{"name": p.name, "size": p.stat().st_size} for p in self.source_shards],
                self.mix_ratio]  # fmt: skip

    def check_token_ids(self, n_units: int) -> None:
        """Every token id inside ``1..n_units-2`` (the model's units), or an error naming one."""
        groups = ((self.where, self.train), (str(self.dev_path), self.dev),
                  (f"{self.mix_dir}/train.*.json", self.source))  # fmt: skip
        for where, index in groups:
            if index.token_range is None:
                continue
            lo, lo_key, hi, hi_key = index.token_range
            for tok, key in ((lo, lo_key), (hi, hi_key)):
                if not 0 < tok < n_units - 1:
                    raise DataError(
                        f"{where}: utterance {key.removeprefix(MIX_PREFIX)} has token id {tok} "
                        f"outside 1..{n_units - 2} of the model's {n_units} units; the json was "
                        "made with other units"
                    )

    def clean(self, jconfig: dict[str, Any], valid_jconfig: dict[str, Any], subsample: int) -> None:
        """Drop what the model cannot train on (``clean_data``'s rule); counts are logged."""
        self.subsample = subsample
        self.jconfig = jconfig
        self.target_keys, counts = clean_keys(
            self.train, self.train.keys, jconfig, subsample, self.where
        )
        if not self.target_keys:
            raise DataError(f"{self.json_dir}: every train utterance was filtered out ({counts})")
        self.dev_keys, _ = clean_keys(
            self.dev, self.dev.keys, valid_jconfig, subsample, str(self.dev_path)
        )
        self.valid_jconfig = valid_jconfig

    def epoch_batches(self, epoch: int, seed: int) -> tuple[list[list[str]], int]:
        """The epoch's batches (keys) and how many source utterances were drawn into it."""
        if self.mix_dir is None:
            if self._fixed is None:
                self._fixed = make_batchset(
                    MetaView(self.train, self.target_keys), self.jconfig, seed
                )
            return self._fixed, 0
        drawn = list(
            draw_source(MetaView(self.source), len(self.target_keys), self.mix_ratio, seed, epoch)
        )
        drawn, _ = clean_keys(self.source, drawn, self.jconfig, self.subsample, "mix source")
        index = _Merged(self.train, self.source)
        batches = make_batchset(_MergedView(index, self.target_keys + drawn), self.jconfig, seed)
        log.info("epoch %d: %d target + %d source utterances", epoch, len(self.target_keys),
                 len(drawn))  # fmt: skip
        return batches, len(drawn)

    def dev_batches(self, seed: int) -> list[list[str]]:
        return make_batchset(MetaView(self.dev, self.dev_keys), self.valid_jconfig, seed)

    def batch_frames(self, batch: list[str]) -> tuple[int, int]:
        """``(utterances, padded input frames)`` of a batch of target/source keys."""
        lens = [self._ilen(k) for k in batch]
        return len(batch), max(lens) * len(batch)

    def _ilen(self, key: str) -> int:
        index = self.source if key.startswith(MIX_PREFIX) else self.train
        if key not in index.pos:
            index = self.dev
        return int(index.shape_entry(key)["input"][0]["shape"][0])


class _Merged:
    """Two indexes looked up as one (target + drawn source keys of a mixed epoch)."""

    def __init__(self, *indexes: UttIndex) -> None:
        self.indexes = indexes

    def shape_entry(self, key: str) -> dict[str, Any]:
        for index in self.indexes:
            if key in index.pos:
                return index.shape_entry(key)
        raise KeyError(key)


class _MergedView(MetaView):
    def __init__(self, merged: _Merged, keys: list[str]) -> None:
        self.index = merged  # type: ignore[assignment]
        self.keys_ = keys
