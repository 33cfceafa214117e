"""Stage-0 input adapters: turn a user's input into candidate utterances plus rejects.

Three inputs are understood: a folder of audio with a transcript file, an existing Kaldi data
dir, and a JSON-lines manifest. Adapters only pair keys, audio and raw text; ``validate`` then
checks audio and text. Every input key comes out of an adapter as a candidate or a reject.

Adapters are generators over a ``KeyStore`` (SQLite on disk), so memory does not grow with the
corpus; they yield candidates in key order (rejects may come in any order).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e_asr.data.audio import AUDIO_EXTENSIONS
from e2e_asr.data.datadir import Segment, iter_lines, split_kv
from e2e_asr.data.keystore import CHUNK, KeyStore

_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Candidate:
    key: str
    wav: str  # path or "cmd |"
    text: str  # raw, not yet normalised
    spk: str
    where: str  # e.g. "transcript.txt:12", for messages
    segment: Segment | None = None


@dataclass(frozen=True)
class Reject:
    key: str
    reason: str  # category, e.g. "no_audio"
    detail: str = ""

    def line(self) -> str:
        if self.detail:
            return f"{self.key}\t{self.reason}: {self.detail}"
        return f"{self.key}\t{self.reason}"


Item = Candidate | Reject


def sanitize_key(key: str) -> str:
    """Kaldi keys cannot hold whitespace."""
    return _WS_RE.sub("_", key.strip())


def iter_audio(root: str | os.PathLike) -> Iterator[Path]:
    """Audio files (wav, flac; any case) under ``root``, recursively, as absolute paths."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"audio directory not found: {root}")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(AUDIO_EXTENSIONS):
                yield Path(dirpath) / name


def find_audio(root: str | os.PathLike) -> list[Path]:
    return list(iter_audio(root))


def path_key(path: Path, root: Path) -> str:
    """Key of an audio file named by path: its path under ``root`` without extension, '/'→'-'."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return sanitize_key(path.stem)
    return sanitize_key("-".join(rel.with_suffix("").parts))


def _is_ppasr_line(raw: bytes) -> bool:
    if b"\t" not in raw:
        return False
    first = raw.split(b"\t", 1)[0].strip().lower()
    return first.endswith(tuple(e.encode() for e in AUDIO_EXTENSIONS))


def detect_transcript_format(path: str | os.PathLike, probe_lines: int = 200) -> str:
    """``ppasr`` (``<relative/path.wav>\\t<text>``) or ``aishell`` (``<key> <text>``)."""
    votes = [
        _is_ppasr_line(raw)
        for _, (_, raw) in zip(range(probe_lines), iter_lines(path), strict=False)
    ]
    return "ppasr" if votes and sum(votes) * 2 >= len(votes) else "aishell"


def _decode_key(raw_key: bytes) -> str:
    return sanitize_key(raw_key.decode("utf-8", "replace"))


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# Grouped view of a "(key, lineno, text, path)" table: one row per key with how often it
# appears, its first line, all its lines, whether any line was not UTF-8, and its value.
_GROUP = """CREATE TABLE {g} AS SELECT key, count(*) AS n, min(lineno) AS ln,
    group_concat(lineno, ', ') AS lns, max(text IS NULL) AS bad, min(text) AS text,
    min(path) AS path FROM {t} GROUP BY key"""


def _lines_table(store: KeyStore, name: str) -> None:
    store.create(name, "key TEXT, lineno INTEGER, text TEXT, path TEXT")


def _group(store: KeyStore, table: str) -> str:
    g = f"{table}_g"
    store.db.execute(f"DROP TABLE IF EXISTS {g}")
    store.db.execute(_GROUP.format(g=g, t=table))
    store.index(g)
    return g


def _line_problem(key: str, n: int, lns: str, bad: int, ln: int, source: Path) -> Reject | None:
    """Why a key seen on transcript/table lines cannot be used, or None."""
    if n > 1:
        return Reject(key, "duplicate_key", f"{source} lines {lns}")
    if bad:
        return Reject(key, "non_utf8", f"{source} line {ln} is not valid UTF-8")
    return None


def from_wav_dir(
    wav_dir: str | os.PathLike,
    transcript: str | os.PathLike,
    store: KeyStore,
    speaker_from: str = "utt",
) -> Iterator[Item]:
    """Audio found recursively under ``wav_dir``; transcript format detected automatically.

    AISHELL lines ``<key> <text>`` pair with the audio file named ``<key>.wav``/``.flac``; PPASR
    lines ``<path>\\t<text>`` name the file (relative to ``wav_dir``), and the key is that path
    without extension, '/' replaced by '-'.
    """
    wav_root, tpath = Path(wav_dir).resolve(), Path(transcript)
    if not tpath.is_file():
        raise FileNotFoundError(f"transcript not found: {tpath}")
    ppasr = detect_transcript_format(tpath) == "ppasr"
    _lines_table(store, "lines")
    store.create("audio", "key TEXT, path TEXT")

    def key_of(p: Path) -> str:
        return path_key(p, wav_root) if ppasr else sanitize_key(p.stem)

    bad_names: list[Reject] = []  # file names that are not UTF-8 cannot go in wav.scp

    def audio_rows() -> Iterator[tuple[str, str]]:
        for p in iter_audio(wav_root):
            try:
                str(p).encode("utf-8")
            except UnicodeEncodeError:
                bad_names.append(
                    Reject(
                        _decode_key(os.fsencode(p.stem)),
                        "non_utf8",
                        f"{os.fsencode(p).decode('utf-8', 'replace')}: the file name is not "
                        "valid UTF-8; rename the file",
                    )
                )
                continue
            yield key_of(p), str(p)

    store.insert("audio", audio_rows())
    yield from bad_names

    def line_rows() -> Iterator[tuple]:
        for lineno, raw in iter_lines(tpath):
            if not ppasr:
                k, t = split_kv(raw, None)
                yield _decode_key(k), lineno, _utf8(t), None
                continue
            if b"\t" not in raw:
                k, _ = split_kv(raw, None)
                bad.append(
                    Reject(
                        f"{_decode_key(k)}@line{lineno}",
                        "bad_line",
                        f"{tpath}:{lineno}: expected '<path>\\t<text>'",
                    )
                )
                continue
            k, t = split_kv(raw, b"\t")
            rel = k.decode("utf-8", "replace")
            p = Path(rel) if os.path.isabs(rel) else wav_root / rel
            yield path_key(p, wav_root), lineno, _utf8(t), str(p)

    bad: list[Reject] = []  # malformed lines, reported as they are found
    for _ in _chunks(line_rows(), store, "lines"):
        yield from bad
        bad.clear()
    yield from bad
    lg = _group(store, "lines")
    store.create("audio_g", "key TEXT, n INTEGER, path TEXT, paths TEXT")
    store.db.execute(
        "INSERT INTO audio_g SELECT key, count(*), min(path), "
        "group_concat(path, ', ') FROM audio GROUP BY key"
    )
    store.index("audio_g")
    rows = store.query(
        f"""SELECT k.key, l.n, l.ln, l.lns, l.bad, l.text, l.path, a.n, a.path, a.paths
        FROM (SELECT key FROM {lg} UNION SELECT key FROM audio_g) AS k
        LEFT JOIN {lg} AS l ON l.key = k.key LEFT JOIN audio_g AS a ON a.key = k.key
        ORDER BY k.key"""
    )
    for key, n, ln, lns, is_bad, text, line_path, an, apath, apaths in rows:
        if n is None:
            yield Reject(key, "no_transcript", f"no transcript line for {apaths}")
            continue
        problem = _line_problem(key, n, lns, is_bad, ln, tpath)
        if problem is None and ppasr:
            apath = line_path if Path(line_path).is_file() else None
            if apath is None:
                problem = Reject(key, "no_audio", f"{tpath}:{ln}: audio file {line_path} not found")
        elif problem is None and an is None:
            problem = Reject(
                key, "no_audio", f"{tpath}:{ln}: no audio file {key}.wav/.flac under {wav_root}"
            )
        elif problem is None and an > 1:
            problem = Reject(key, "duplicate_key", f"audio files {apaths}")
        if problem is not None:
            yield problem
            continue
        spk = Path(apath).parent.name if speaker_from == "dir" else key
        yield Candidate(key, apath, text, spk or key, f"{tpath}:{ln}")


def _chunks(rows: Iterator[tuple], store: KeyStore, table: str, size: int = CHUNK) -> Iterator[int]:
    """Insert ``rows`` in chunks, yielding between chunks so pending rejects can be emitted."""
    chunk: list[tuple] = []
    n = 0
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            store.insert(table, chunk)
            n += len(chunk)
            chunk = []
            yield n
    store.insert(table, chunk)
    yield n + len(chunk)


def _table_rows(path: Path, parse=None) -> Iterator[tuple]:
    """``(key, lineno, value or None if not UTF-8, parsed or None)`` for a Kaldi table."""
    for lineno, raw in iter_lines(path):
        k, v = split_kv(raw, None)
        value = _utf8(v)
        yield _decode_key(k), lineno, value, (parse(value) if parse and value is not None else None)


def _parse_segment(value: str) -> str | None:
    parts = value.split()
    try:
        if len(parts) != 3:
            return None
        float(parts[1]), float(parts[2])
    except ValueError:
        return None
    return parts[0]


def from_kaldi_dir(data_dir: str | os.PathLike, store: KeyStore) -> Iterator[Item]:
    """An existing Kaldi data dir (``wav.scp``, ``text``, optional ``utt2spk``/``segments``).

    A bad or duplicated ``utt2spk`` line does not lose an utterance: it becomes its own speaker.
    """
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: missing {name}")
    tables = {"wav": d / "wav.scp", "txt": d / "text", "spk": d / "utt2spk", "seg": d / "segments"}
    for name, path in tables.items():
        _lines_table(store, name)
        if path.is_file():
            # "path" holds the parsed recording id for segments
            parse = _parse_segment if name == "seg" else None
            store.insert(name, _table_rows(path, parse))
    wg, tg, sg = _group(store, "wav"), _group(store, "txt"), _group(store, "spk")
    segmented = tables["seg"].is_file()
    if not segmented:
        rows = store.query(
            f"""SELECT k.key, t.n, t.ln, t.lns, t.bad, t.text, w.n, w.ln, w.lns, w.bad, w.text,
            s.n, s.text FROM (SELECT key FROM {tg} UNION SELECT key FROM {wg}) AS k
            LEFT JOIN {tg} AS t ON t.key = k.key LEFT JOIN {wg} AS w ON w.key = k.key
            LEFT JOIN {sg} AS s ON s.key = k.key ORDER BY k.key"""
        )
        for key, tn, tln, tlns, tbad, text, wn, wln, wlns, wbad, wav, sn, spk in rows:
            problem = None
            if tn is not None:
                problem = _line_problem(key, tn, tlns, tbad, tln, tables["txt"])
            if problem is None and wn is not None:
                problem = _line_problem(key, wn, wlns, wbad, wln, tables["wav"])
            if problem is None and tn is None:
                problem = Reject(key, "no_transcript", f"{tables['txt']} has no line for {key}")
            if problem is None and wn is None:
                problem = Reject(key, "no_audio", f"{tables['wav']} has no entry {key}")
            if problem is not None:
                yield problem
                continue
            spk = spk if sn == 1 and spk else key
            yield Candidate(key, wav, text, sanitize_key(spk), f"{tables['txt']}:{tln}")
        return

    gg = _group(store, "seg")
    store.index(gg, "path")
    rows = store.query(
        f"""SELECT k.key, t.n, t.ln, t.lns, t.bad, t.text, g.n, g.ln, g.lns, g.bad, g.text,
        g.path, w.n, w.bad, w.text, s.n, s.text
        FROM (SELECT key FROM {tg} UNION SELECT key FROM {gg}) AS k
        LEFT JOIN {tg} AS t ON t.key = k.key LEFT JOIN {gg} AS g ON g.key = k.key
        LEFT JOIN {wg} AS w ON w.key = g.path LEFT JOIN {sg} AS s ON s.key = k.key
        ORDER BY k.key"""
    )
    for (
        key,
        tn,
        tln,
        tlns,
        tbad,
        text,
        gn,
        gln,
        glns,
        gbad,
        gval,
        rec,
        wn,
        wbad,
        wav,
        sn,
        spk,
    ) in rows:
        problem = None
        if tn is not None:
            problem = _line_problem(key, tn, tlns, tbad, tln, tables["txt"])
        if problem is None and gn is not None:
            problem = _line_problem(key, gn, glns, gbad, gln, tables["seg"])
        if problem is None and gn is not None and rec is None:
            problem = Reject(key, "bad_line", f"{tables['seg']}:{gln}: {gval!r}")
        if problem is None and gn is None:
            problem = Reject(key, "no_audio", f"{tables['seg']} has no line for {key}")
        if problem is None and tn is None:
            problem = Reject(key, "no_transcript", f"{tables['txt']} has no line for {key}")
        if problem is None and (wn is None or wn > 1 or wbad):
            problem = Reject(key, "no_audio", f"{tables['wav']} has no usable entry {rec}")
        if problem is not None:
            yield problem
            continue
        _, start, end = gval.split()
        spk = spk if sn == 1 and spk else key
        yield Candidate(
            key,
            wav,
            text,
            sanitize_key(spk),
            f"{tables['txt']}:{tln}",
            Segment(rec, float(start), float(end)),
        )
    # Recordings: bad/duplicated lines, or never used by a segment.
    for key, n, ln, lns, is_bad, used in store.query(
        f"""SELECT w.key, w.n, w.ln, w.lns, w.bad,
            EXISTS (SELECT 1 FROM {gg} AS g WHERE g.path = w.key) FROM {wg} AS w"""
    ):
        problem = _line_problem(key, n, lns, is_bad, ln, tables["wav"])
        if problem is None and not used:
            problem = Reject(key, "no_transcript", f"recording {key} has no segments")
        if problem is not None:
            yield problem


def from_manifest(manifest: str | os.PathLike, store: KeyStore) -> Iterator[Item]:
    """JSON lines with ``audio_filepath``, ``text`` and optional ``duration`` (ignored: measured).

    The key is the audio path relative to the manifest's folder without extension ('/' → '-'),
    or the file name without extension for paths outside it.
    """
    mpath = Path(manifest)
    if not mpath.is_file():
        raise FileNotFoundError(f"manifest not found: {mpath}")
    root = mpath.parent.resolve()
    bad: list[Reject] = []

    def rows() -> Iterator[tuple]:
        for lineno, raw in iter_lines(mpath):
            bad_key = f"{mpath.name}@line{lineno}"
            line = _utf8(raw)
            if line is None:
                bad.append(Reject(bad_key, "non_utf8", f"{mpath} line {lineno} is not valid UTF-8"))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(
                    Reject(bad_key, "bad_line", f"{mpath}:{lineno}: invalid JSON ({exc.msg})")
                )
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("audio_filepath"), str):
                bad.append(
                    Reject(bad_key, "bad_line", f"{mpath}:{lineno}: no 'audio_filepath' string")
                )
                continue
            ap = obj["audio_filepath"]
            p = Path(ap) if os.path.isabs(ap) else root / ap
            text = obj.get("text")
            yield path_key(p, root), lineno, text if isinstance(text, str) else "", str(p)

    _lines_table(store, "man")
    for _ in _chunks(rows(), store, "man"):
        yield from bad
        bad.clear()
    g = _group(store, "man")
    for key, n, ln, lns, is_bad, text, path in store.query(
        f"SELECT key, n, ln, lns, bad, text, path FROM {g} ORDER BY key"
    ):
        problem = _line_problem(key, n, lns, is_bad, ln, mpath)
        if problem is None and not Path(path).is_file():
            problem = Reject(key, "no_audio", f"{mpath}:{ln}: audio file {path} not found")
        if problem is not None:
            yield problem
        else:
            yield Candidate(key, path, text, key, f"{mpath}:{ln}")
