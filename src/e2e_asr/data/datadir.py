"""Kaldi data directories: ``wav.scp text utt2spk spk2utt [segments] [utt2dur]``, sorted by key."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e_asr.data.io import atomic_open, atomic_write_lines
from e2e_asr.data.keystore import CHUNK, KeyStore


class DataDirError(ValueError):
    """A malformed data-dir file; the message names the file and line."""


@dataclass(frozen=True)
class Segment:
    recording: str
    start: float
    end: float  # -1 means "to the end of the recording" (Kaldi convention)


@dataclass(frozen=True)
class Utterance:
    utt: str
    wav: str  # path or "cmd |" of the recording
    text: str
    spk: str
    segment: Segment | None = None
    duration: float | None = None


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line without newline) of non-blank lines; bytes so a bad line is local."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\r\n")
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # BOM from Windows editors
                raw = raw[3:]
            if raw.strip():
                yield lineno, raw


def split_kv(raw: bytes, sep: bytes | None = None) -> tuple[bytes, bytes]:
    """THE Kaldi table line rule: key up to the first ``sep`` (default: ASCII white space),
    value the rest, both stripped; ``b""`` when there is no value."""
    parts = raw.strip().split(sep, 1)
    return parts[0].strip(), (parts[1].strip() if len(parts) > 1 else b"")


def iter_kv(path: str | os.PathLike, allow_empty_value: bool = False) -> Iterator[tuple[str, str]]:
    """``key value…`` lines of a UTF-8 Kaldi table; raises DataDirError naming file:line."""
    for lineno, raw in iter_lines(path):
        key, value = split_kv(raw)
        try:
            k, v = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataDirError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from exc
        if not value and not allow_empty_value:
            raise DataDirError(
                f"{path}:{lineno}: expected '<key> <value>', got {raw.decode('utf-8')!r}"
            )
        yield k, v


class SortedLookup:
    """Look up keys, in increasing order, in a sorted Kaldi table read as a stream (flat
    memory: one line at a time). A missing file finds nothing; an unsorted one is an error."""

    def __init__(self, path: str | os.PathLike, allow_empty_value: bool = False) -> None:
        self.path = Path(path)
        self._it = iter_kv(self.path, allow_empty_value) if self.path.is_file() else iter(())
        self._cur: tuple[str, str] | None = next(self._it, None)

    def get(self, key: str) -> str | None:
        while self._cur is not None and self._cur[0] < key:
            prev = self._cur[0]
            self._cur = next(self._it, None)
            if self._cur is not None and self._cur[0] < prev:
                raise DataDirError(
                    f"{self.path}: not sorted (at {self._cur[0]!r}); sort it (LC_ALL=C)"
                )
        if self._cur is not None and self._cur[0] == key:
            return self._cur[1]
        return None


def read_kv(path: str | os.PathLike, allow_empty_value: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in iter_kv(path, allow_empty_value):
        if key in out:
            raise DataDirError(f"{path}: duplicate key {key!r}")
        out[key] = value
    return out


def read_segments(path: str | os.PathLike) -> dict[str, Segment]:
    """``utt rec start end`` lines."""
    out: dict[str, Segment] = {}
    for utt, value in iter_kv(path):
        parts = value.split()
        try:
            if len(parts) != 3:
                raise ValueError
            out[utt] = Segment(parts[0], float(parts[1]), float(parts[2]))
        except ValueError:
            raise DataDirError(f"{path}: bad segment line for {utt!r}: {value!r}") from None
    return out


class DataDirWriter:
    """Streams utterances, given in increasing key order, into a sorted data dir.

    ``spk2utt`` (sorted by speaker) and, with segments, ``wav.scp`` (sorted by recording) are
    gathered in a ``KeyStore`` on disk and written on ``close``, so memory stays flat.
    """

    def __init__(self, out_dir: str | os.PathLike, segmented: bool, store: KeyStore) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.segmented = segmented
        self.store = store
        store.create("w_spk", "spk TEXT, utt TEXT")
        store.create("w_rec", "rec TEXT PRIMARY KEY, wav TEXT")
        names = ["text", "utt2spk", "utt2dur", "segments" if segmented else "wav.scp"]
        self._ctx = {n: atomic_open(self.out / n, "w") for n in names}
        self._fh = {n: c.__enter__() for n, c in self._ctx.items()}
        self._last = ""
        self._missing_dur = False
        self._spk_rows: list[tuple[str, str]] = []
        self.count = 0

    def add(self, u: Utterance) -> None:
        if u.utt <= self._last and self.count:
            raise ValueError(f"utterances out of order: {u.utt!r} after {self._last!r}")
        self._last = u.utt
        fh = self._fh
        if self.segmented:
            if u.segment is None:
                raise ValueError(
                    f"{u.utt}: a segmented data dir needs a segment for every utterance"
                )
            seg = u.segment
            fh["segments"].write(f"{u.utt} {seg.recording} {seg.start:.3f} {seg.end:.3f}\n")
            self.store.db.execute(
                "INSERT OR IGNORE INTO w_rec VALUES (?, ?)", (seg.recording, u.wav)
            )
        else:
            fh["wav.scp"].write(f"{u.utt} {u.wav}\n")
        fh["text"].write(f"{u.utt} {u.text}\n")
        fh["utt2spk"].write(f"{u.utt} {u.spk}\n")
        if u.duration is None:
            self._missing_dur = True
        else:
            fh["utt2dur"].write(f"{u.utt} {u.duration:.3f}\n")
        self._spk_rows.append((u.spk, u.utt))
        if len(self._spk_rows) >= CHUNK:
            self.store.insert("w_spk", self._spk_rows)
            self._spk_rows = []
        self.count += 1

    def close(self) -> None:
        self.store.insert("w_spk", self._spk_rows)
        for c in self._ctx.values():
            c.__exit__(None, None, None)
        if self._missing_dur:
            (self.out / "utt2dur").unlink()
        if not self.segmented and (self.out / "segments").exists():
            (self.out / "segments").unlink()
        if self.segmented:
            atomic_write_lines(
                self.out / "wav.scp",
                (
                    f"{r} {w}"
                    for r, w in self.store.query("SELECT rec, wav FROM w_rec ORDER BY rec")
                ),
            )

        def spk2utt() -> Iterator[str]:
            cur, utts = None, []
            for spk, utt in self.store.query("SELECT spk, utt FROM w_spk ORDER BY spk, utt"):
                if spk != cur and cur is not None:
                    yield f"{cur} {' '.join(utts)}"
                    utts = []
                cur = spk
                utts.append(utt)
            if cur is not None:
                yield f"{cur} {' '.join(utts)}"

        atomic_write_lines(self.out / "spk2utt", spk2utt())

    def abort(self, exc: BaseException) -> None:
        for c in self._ctx.values():
            c.__exit__(type(exc), exc, None)

    def __enter__(self) -> DataDirWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def write_data_dir(out_dir: str | os.PathLike, utts: Iterable[Utterance]) -> int:
    """Write a sorted data dir from utterances in any order; returns their number."""
    items = sorted(utts, key=lambda u: u.utt)
    segmented = any(u.segment is not None for u in items)
    with KeyStore(out_dir) as store, DataDirWriter(out_dir, segmented, store) as w:
        for u in items:
            w.add(u)
    return len(items)


def read_data_dir(data_dir: str | os.PathLike) -> list[Utterance]:
    """Read a data dir written by ``write_data_dir`` (or by Kaldi) into utterances."""
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise DataDirError(f"{d}: missing {name}")
    wavs = read_kv(d / "wav.scp")
    texts = read_kv(d / "text", allow_empty_value=True)
    utt2spk = read_kv(d / "utt2spk") if (d / "utt2spk").is_file() else {}
    durs = read_kv(d / "utt2dur") if (d / "utt2dur").is_file() else {}
    segments = read_segments(d / "segments") if (d / "segments").is_file() else None
    out = []
    for utt, text in texts.items():
        seg = segments.get(utt) if segments is not None else None
        rec = seg.recording if seg is not None else utt
        if rec not in wavs:
            raise DataDirError(f"{d}: utterance {utt!r} has no wav.scp entry {rec!r}")
        dur = float(durs[utt]) if utt in durs else None
        out.append(Utterance(utt, wavs[rec], text, utt2spk.get(utt, utt), seg, dur))
    return sorted(out, key=lambda u: u.utt)


def iter_data_dir(data_dir: str | os.PathLike, store: KeyStore) -> Iterator[Utterance]:
    """Utterances of a data dir in key order, joined on disk (memory does not grow)."""
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise DataDirError(f"{d}: missing {name}")
    names = {"wav": "wav.scp", "txt": "text", "spk": "utt2spk", "dur": "utt2dur"}
    for table, name in names.items():
        store.create(table, "key TEXT PRIMARY KEY, value TEXT")
        if (d / name).is_file():
            store.insert(table, iter_kv(d / name, allow_empty_value=table == "txt"))
    store.create("seg", "key TEXT PRIMARY KEY, rec TEXT, start REAL, end REAL")
    segmented = (d / "segments").is_file()
    if segmented:
        store.insert(
            "seg",
            ((u, s.recording, s.start, s.end) for u, s in read_segments(d / "segments").items()),
        )
    rows = store.query(
        """SELECT t.key, t.value, w.value, s.value, u.value, g.rec, g.start, g.end
        FROM txt AS t LEFT JOIN seg AS g ON g.key = t.key
        LEFT JOIN wav AS w ON w.key = (CASE WHEN g.rec IS NULL THEN t.key ELSE g.rec END)
        LEFT JOIN spk AS s ON s.key = t.key LEFT JOIN dur AS u ON u.key = t.key
        ORDER BY t.key"""
    )
    for utt, text, wav, spk, dur, rec, start, end in rows:
        if segmented and rec is None:
            raise DataDirError(f"{d}/segments: no line for utterance {utt!r}")
        if wav is None:
            raise DataDirError(f"{d}: utterance {utt!r} has no wav.scp entry {rec or utt!r}")
        seg = Segment(rec, start, end) if rec is not None else None
        yield Utterance(utt, wav, text, spk or utt, seg, float(dur) if dur else None)
