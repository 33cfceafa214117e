"""The training and dev utterances of a run, read a json shard at a time, and source mixing.

``json_dir`` is stage 2's output: the train shards it recorded in ``train_shards.txt`` (one
file name per line; older directories without it: ``train.{1..json_nj}.json`` with
``--json-nj``, else every ``train.N.json``), and ``dev.json``.

Memory does not grow with the corpus, as long as the shards do not (stage 2's ``json_nj``):
an epoch is planned and trained a shard at a time. The shards come in an order shuffled per
epoch; a shard is scanned, streaming, into an index (``UttIndex``: per utterance its key, where
its entry lies in the shard and the two lengths batching needs), its utterances are batched
(``make_batchset`` over shape-only entries, ``MetaView``) and its batches shuffled; the feature
loader reads an entry from its shard when its batch is loaded (``EntryView``). Between epochs
only counts per shard stay (``ShardInfo``, ``EpochPlan``): how many batches each shard makes,
so every DDP rank takes an equal share of every shard, and a resumed run skips to its position
without reading the shards before it. Batches are made within a shard: stage 2 deals the
utterances to its shards in turn, so every shard is a sample of the whole corpus.

With ``--mix-json-dir D --mix-ratio R`` every epoch also trains on ``R x (number of target train
utterances)`` utterances drawn without replacement from the train json of ``D`` (the source
domain), a different draw each epoch, fixed by (seed, epoch); each target shard gets its share
of the draw from one or two source shards (``source_rows``). Mixing some source data back in
is what keeps fine-tuning from forgetting the original domain.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2e_asr.data.batching import clean_data, epoch_order, make_batchset, shard_for_rank
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

    def add_shard(self, path: Path, prefix: str = "", rows: Container[int] | None = None) -> int:
        """Index the utterances of ``path`` (keys get ``prefix``): every one, or those whose
        entry number in the file (0, 1, ...) is in ``rows``; returns how many."""
        sid = len(self.shards)
        self.shards.append(str(path))
        n = 0
        for row, (key, off, length, entry) in enumerate(iter_json_entries(path)):
            if rows is not None and row not in rows:
                continue
            k = prefix + key
            if k in self.pos:
                first = self.shards[self._shard[self.pos[k]]]
                raise DataError(f"{path}: utterance {key} also appears in {first}")
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
    index: UttIndex, keys: list[str], jconfig: dict[str, Any], subsample: int
) -> tuple[list[str], dict[str, int]]:
    """``clean_data``'s rule over ``keys``, a chunk at a time; the caller logs the counts
    (``log_dropped``), once for many calls."""
    kept: list[str] = []
    total: dict[str, int] = {}
    quiet = logging.getLogger("e2e_asr.data.batching")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one summary line instead of one per chunk
    try:
        for i in range(0, len(keys), 2000):
            part, counts = clean_data(MetaView(index, keys[i : i + 2000]), jconfig, subsample)
            kept.extend(part)
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
    finally:
        quiet.setLevel(level)
    return kept, total


def log_dropped(name: str, counts: dict[str, int], total: int) -> None:
    dropped = sum(counts.values())
    if dropped:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        log.info("%s: clean_data dropped %d of %d utterances (%s)", name, dropped, total, detail)


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


_MIX_SALT = 0x6D6978


def source_total(sizes: list[int], n_target: int, ratio: float) -> int:
    """How many source utterances an epoch with ``n_target`` target utterances draws:
    ``round(ratio * n_target)``, all of the source if it has fewer."""
    if ratio <= 0:
        return 0
    return min(int(round(ratio * n_target)), sum(sizes))


def source_rows(
    sizes: list[int], kept: list[int], ratio: float, seed: int, epoch: int, j: int
) -> list[tuple[int, np.ndarray]]:
    """The source utterances mixed into the ``j``-th target shard of ``epoch``, as
    ``(source shard, entry numbers in that file)`` pairs.

    ``sizes``: utterances per source shard; ``kept``: the target shards' utterances, in the
    epoch's shard order. The epoch draws ``source_total`` utterances without replacement: the
    source shards in an order shuffled by (seed, epoch), each shard's entries shuffled too, make
    one stream, and target shard ``j`` takes the next part of it in proportion to ``kept[j]``.
    Such a part lies in one or two source shards, so mixing reads a few source shards per
    target shard, never the whole source at once.
    """
    total = source_total(sizes, sum(kept), ratio)
    n_kept = sum(kept)
    if total == 0 or n_kept == 0:
        return []
    before = sum(kept[:j])
    a, b = total * before // n_kept, total * (before + kept[j]) // n_kept
    out: list[tuple[int, np.ndarray]] = []
    pos = 0
    for s in np.random.default_rng([int(seed), int(epoch), _MIX_SALT]).permutation(len(sizes)):
        s = int(s)
        lo, hi = max(a - pos, 0), min(b - pos, sizes[s])
        if lo < hi:
            perm = np.random.default_rng([int(seed), int(epoch), _MIX_SALT, s + 1])
            out.append((s, np.sort(perm.permutation(sizes[s])[lo:hi])))
        pos += sizes[s]
        if pos >= b:
            break
    return out


def _digest(batches: list[list[str]]) -> int:
    """A checksum of a shard's batches (which keys, in which batch), for the resume check."""
    crc = 0
    for batch in batches:
        crc = zlib.crc32("\x1f".join(batch).encode("utf-8") + b"\x1e", crc)
    return crc


@dataclass
class ShardInfo:
    """What stays in memory of a train shard: counts, no utterance."""

    path: Path
    utts: int
    kept: int = 0  # after clean_data
    batches: int = 0  # of its kept utterances alone (an epoch without source mixing)
    digest: int = 0


@dataclass
class Segment:
    """One target shard's part of an epoch: its batches (with the source utterances drawn
    for it), the epoch's order of them, and its entries, read from the json on access."""

    shard: int  # index into TrainData.shards
    batches: list[list[str]]  # make_batchset's, a pure function of the shard (and its draw)
    order: list[int]  # the epoch's order of ``batches``
    entries: EntryView
    target: int  # utterances kept from the target shard
    drawn: int  # source utterances kept from the draw
    dropped: tuple[dict[str, int], dict[str, int]]  # clean_data counts: target, source
    frames: list[tuple[int, int]]  # per batch: (utterances, padded input frames)

    def for_rank(self, rank: int, world: int, pad: str) -> list[list[str]]:
        """The batches ``rank`` trains, in order (``shard_for_rank`` of this shard)."""
        return [self.batches[i] for i in shard_for_rank(self.order, rank, world, pad)]

    def close(self) -> None:
        self.entries.close()


@dataclass
class EpochPlan:
    """An epoch: the target shards in this epoch's order and how many batches each makes.

    Ranks train the shards in this order, each rank an equal share of every shard's batches
    (``shard_for_rank`` per shard), one shard's index in memory at a time. The per-shard counts
    let a resumed run skip to its position without reading the shards before it."""

    epoch: int
    order: list[int]  # shard numbers
    counts: list[int]  # batches of each shard (all ranks), in ``order``
    digests: list[int]
    target: int
    drawn: int
    largest: list[tuple[int, int]]  # (shard, batch number): most padded frames, longest padding

    @property
    def batches(self) -> int:
        return sum(self.counts)

    def state(self) -> list[list[int]]:
        """What a snapshot records of the epoch, compared on resume."""
        return [[s, c, d] for s, c, d in zip(self.order, self.counts, self.digests, strict=True)]

    def rank_counts(self, rank: int, world: int, pad: str) -> list[int]:
        """Batches ``rank`` trains from each shard, in ``order`` (equal for every rank)."""
        return [len(shard_for_rank(list(range(c)), rank, world, pad)) for c in self.counts]


class TrainData:
    """Target train shards, dev set and (optionally) the source domain, read a shard at a time.

    Memory does not grow with the number of shards: only counts per shard are kept (the
    ``ShardInfo``), and a shard's index is built when its part of an epoch is planned or
    trained (``segment``), then dropped. The dev set is indexed whole (it is small)."""

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
        self.ranges: list[tuple[str, tuple[int, str, int, str]]] = []
        self.train, self.dim = self._survey(self.shards, "", self.where)
        if not sum(s.utts for s in self.train):
            raise DataError(f"{json_dir}: the train json files hold no utterances")
        dev_path = json_dir / "dev.json"
        if not dev_path.is_file():
            raise DataError(f"{dev_path}: missing (stage 2 writes it)")
        self.dev_path = dev_path
        self.dev = build_index([dev_path])
        if len(self.dev) and self.dev.idim != self.dim:
            raise DataError(f"{dev_path}: feature dim {self.dev.idim}, train has {self.dim}")
        if self.dev.token_range is not None:
            self.ranges.append((str(dev_path), self.dev.token_range))
        self.dev_entries = EntryView(self.dev)
        self.mix_ratio = float(mix_ratio)
        self.mix_dir = mix_json_dir if mix_ratio > 0 else None
        self.source: list[ShardInfo] = []
        self.source_shards: list[Path] = []
        if self.mix_dir is not None:
            self.source_shards = train_shards(self.mix_dir)
            self.source, dim = self._survey(
                self.source_shards, MIX_PREFIX, f"{self.mix_dir}/train.*.json"
            )
            if dim != self.dim:
                raise DataError(
                    f"{self.mix_dir}: source features have dim {dim}, target {self.dim}"
                )
        self.dev_keys: list[str] = []
        self.n_train = 0
        self._largest: list[tuple[int, int]] = []
        self._plan: EpochPlan | None = None

    def _survey(self, paths: list[Path], prefix: str, where: str) -> tuple[list[ShardInfo], int]:
        """One streaming pass: every entry checked (shapes, one feature dim, token ids' range),
        utterances counted per shard; one shard's index in memory at a time."""
        infos = []
        dim = None
        lo = hi = None
        for path in paths:
            index = build_index([path], prefix)
            if len(index):
                if dim is None:
                    dim = index.idim
                elif index.idim != dim:
                    raise DataError(
                        f"{path}: utterance {index.keys[0].removeprefix(prefix)} has feature "
                        f"dim {index.idim}, the earlier json files have {dim}"
                    )
            r = index.token_range
            if r is not None:
                lo = r[:2] if lo is None or r[0] < lo[0] else lo
                hi = r[2:] if hi is None or r[2] > hi[0] else hi
            infos.append(ShardInfo(path, len(index)))
        if lo is not None and hi is not None:
            self.ranges.append((where, (*lo, *hi)))
        return infos, int(dim or 0)

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
        for where, (lo, lo_key, hi, hi_key) in self.ranges:
            for tok, key in ((lo, lo_key), (hi, hi_key)):
                if not 0 < tok < n_units - 1:
                    raise DataError(
                        f"{where}: utterance {key.removeprefix(MIX_PREFIX)} has token id {tok} "
                        f"outside 1..{n_units - 2} of the model's {n_units} units; the json was "
                        "made with other units"
                    )

    def clean(
        self,
        jconfig: dict[str, Any],
        valid_jconfig: dict[str, Any],
        subsample: int,
        seed: int,
    ) -> None:
        """Drop what the model cannot train on (``clean_data``'s rule) and batch every shard
        once (``make_batchset`` with ``seed``): counts per shard are kept, counts logged."""
        self.subsample = subsample
        self.jconfig = jconfig
        self.valid_jconfig = valid_jconfig
        self.seed = int(seed)
        dropped: dict[str, int] = {}
        best: list[tuple[float, int, int]] = [(-1.0, 0, 0), (-1.0, 0, 0)]
        for s, info in enumerate(self.train):
            seg = self._build(s, 0, [])
            info.kept, info.batches = seg.target, len(seg.batches)
            info.digest = _digest(seg.batches)
            _add_counts(dropped, seg.dropped[0])
            _keep_largest(best, seg)
            seg.close()
        self.n_train = sum(s.kept for s in self.train)
        log_dropped(self.where, dropped, sum(s.utts for s in self.train))
        if not self.n_train:
            raise DataError(f"{self.json_dir}: every train utterance was filtered out ({dropped})")
        self._largest = sorted({(s, b) for _, s, b in best})
        self.dev_keys, counts = clean_keys(self.dev, self.dev.keys, valid_jconfig, subsample)
        log_dropped(str(self.dev_path), counts, len(self.dev))

    def _build(self, shard: int, epoch: int, rows: list[tuple[int, np.ndarray]]) -> Segment:
        """Shard ``shard``'s part of ``epoch``, with the source entries ``rows`` mixed in."""
        index = build_index([self.train[shard].path])
        keys, t_counts = clean_keys(index, index.keys, self.jconfig, self.subsample)
        source = UttIndex()
        for s, r in rows:
            source.add_shard(self.source_shards[s], MIX_PREFIX, rows=set(r.tolist()))
        drawn, s_counts = clean_keys(source, source.keys, self.jconfig, self.subsample)
        view = MetaView(index, keys)
        if drawn:
            view = _MergedView(_Merged(index, source), keys + drawn)
        batches = make_batchset(view, self.jconfig, self.seed)
        frames = []
        for b in batches:
            frames.append((len(b), max(int(view[k]["input"][0]["shape"][0]) for k in b) * len(b)))
        return Segment(
            shard=shard,
            batches=batches,
            order=epoch_order(len(batches), self.seed, epoch, shard + 1),
            entries=EntryView(index, source),
            target=len(keys),
            drawn=len(drawn),
            dropped=(t_counts, s_counts),
            frames=frames,
        )

    def _rows(self, plan_order: list[int], epoch: int, j: int) -> list[tuple[int, np.ndarray]]:
        if self.mix_dir is None:
            return []
        kept = [self.train[s].kept for s in plan_order]
        sizes = [s.utts for s in self.source]
        return source_rows(sizes, kept, self.mix_ratio, self.seed, epoch, j)

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """The epoch's shard order and batch counts. Without source mixing they come from
        ``clean``'s pass; with it, the epoch's draw is batched shard by shard (one pass)."""
        if self._plan is not None and self._plan.epoch == epoch:
            return self._plan
        order = epoch_order(len(self.shards), self.seed, epoch)
        if self.mix_dir is None:
            plan = EpochPlan(
                epoch,
                order,
                [self.train[s].batches for s in order],
                [self.train[s].digest for s in order],
                self.n_train,
                0,
                self._largest,
            )
        else:
            sizes = [s.utts for s in self.source]
            want = int(round(self.mix_ratio * self.n_train))
            if want > sum(sizes):
                log.warning(
                    "mix: %d source utterances wanted, only %d exist; using all", want, sum(sizes)
                )
            counts, digests, dropped = [], [], {}
            best: list[tuple[float, int, int]] = [(-1.0, 0, 0), (-1.0, 0, 0)]
            drawn = 0
            for j, s in enumerate(order):
                seg = self._build(s, epoch, self._rows(order, epoch, j))
                counts.append(len(seg.batches))
                digests.append(_digest(seg.batches))
                drawn += seg.drawn
                _add_counts(dropped, seg.dropped[1])
                _keep_largest(best, seg)
                seg.close()
            log_dropped("mix source", dropped, source_total(sizes, self.n_train, self.mix_ratio))
            log.info("epoch %d: %d target + %d source utterances", epoch, self.n_train, drawn)
            largest = sorted({(s, b) for _, s, b in best})
            plan = EpochPlan(epoch, order, counts, digests, self.n_train, drawn, largest)
        self._plan = plan
        return plan

    def segment(self, plan: EpochPlan, j: int) -> Segment:
        """The ``j``-th shard of ``plan``, indexed now (close it when done)."""
        s = plan.order[j]
        seg = self._build(s, plan.epoch, self._rows(plan.order, plan.epoch, j))
        if len(seg.batches) != plan.counts[j] or _digest(seg.batches) != plan.digests[j]:
            seg.close()
            raise DataError(
                f"{self.train[s].path}: its batches differ from those planned for epoch "
                f"{plan.epoch} (the file changed during training?)"
            )
        return seg

    def dev_batches(self) -> list[list[str]]:
        return make_batchset(MetaView(self.dev, self.dev_keys), self.valid_jconfig, self.seed)

    def close(self) -> None:
        self.dev_entries.close()


def _keep_largest(best: list[tuple[float, int, int]], seg: Segment) -> None:
    """Track the batch with the most padded frames and the one with the longest padded length
    (``best``: ``[(score, shard, batch number)] * 2``)."""
    for b, (n, frames) in enumerate(seg.frames):
        for i, score in enumerate((float(frames), frames * frames / n)):
            if score > best[i][0]:
                best[i] = (score, seg.shard, b)


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
