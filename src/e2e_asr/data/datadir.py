"""Kaldi data directories: ``wav.scp text utt2spk spk2utt [segments] [utt2dur]``, sorted by key."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e_asr.data.io import atomic_write_lines


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


def iter_kv(path: str | os.PathLike, allow_empty_value: bool = False) -> Iterator[tuple[str, str]]:
    """``key value…`` lines of a UTF-8 Kaldi table; raises DataDirError naming file:line."""
    for lineno, raw in iter_lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataDirError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from exc
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 1 and not allow_empty_value:
            raise DataDirError(f"{path}:{lineno}: expected '<key> <value>', got {line!r}")
        yield parts[0], parts[1] if len(parts) > 1 else ""


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


def write_data_dir(out_dir: str | os.PathLike, utts: Iterable[Utterance]) -> int:
    """Write a sorted data dir; returns the number of utterances."""
    out = Path(out_dir)
    items = sorted(utts, key=lambda u: u.utt)
    with_segments = any(u.segment is not None for u in items)
    if with_segments:
        recs = {u.segment.recording: u.wav for u in items if u.segment is not None}
        atomic_write_lines(out / "wav.scp", (f"{r} {recs[r]}" for r in sorted(recs)))
        atomic_write_lines(
            out / "segments",
            (
                f"{u.utt} {u.segment.recording} {u.segment.start:.3f} {u.segment.end:.3f}"
                for u in items
                if u.segment is not None
            ),
        )
    else:
        atomic_write_lines(out / "wav.scp", (f"{u.utt} {u.wav}" for u in items))
        if (out / "segments").exists():
            (out / "segments").unlink()
    atomic_write_lines(out / "text", (f"{u.utt} {u.text}" for u in items))
    atomic_write_lines(out / "utt2spk", (f"{u.utt} {u.spk}" for u in items))
    spk2utt: dict[str, list[str]] = {}
    for u in items:
        spk2utt.setdefault(u.spk, []).append(u.utt)
    atomic_write_lines(out / "spk2utt", (f"{s} {' '.join(spk2utt[s])}" for s in sorted(spk2utt)))
    if all(u.duration is not None for u in items):
        atomic_write_lines(out / "utt2dur", (f"{u.utt} {u.duration:.3f}" for u in items))
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
