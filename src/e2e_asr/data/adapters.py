"""Stage-0 input adapters: turn a user's input into candidate utterances plus rejects.

Three inputs are understood: a folder of audio with a transcript file, an existing Kaldi data
dir, and a JSON-lines manifest. Adapters only pair keys, audio and raw text; ``validate`` then
checks audio and text. Every input key comes out of an adapter as a candidate or a reject.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from e2e_asr.data.audio import AUDIO_EXTENSIONS
from e2e_asr.data.datadir import Segment, iter_lines

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
        return (
            f"{self.key}\t{self.reason}: {self.detail}"
            if self.detail
            else f"{self.key}\t{self.reason}"
        )


@dataclass
class AdapterResult:
    candidates: list[Candidate] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def sanitize_key(key: str) -> str:
    """Kaldi keys cannot hold whitespace."""
    return _WS_RE.sub("_", key.strip())


def find_audio(root: str | os.PathLike) -> list[Path]:
    """Audio files (wav, flac; any case) under ``root``, recursively, sorted."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"audio directory not found: {root}")
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )


def path_key(path: Path, root: Path) -> str:
    """Key of an audio file named by path: its path under ``root`` without extension, '/'→'-'."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return sanitize_key(path.stem)
    return sanitize_key("-".join(rel.with_suffix("").parts))


def _split_line(raw: bytes, sep: bytes | None) -> tuple[bytes, bytes]:
    parts = raw.strip().split(sep, 1)
    return parts[0].strip(), (parts[1].strip() if len(parts) > 1 else b"")


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


def _speaker(key: str, audio: Path, speaker_from: str) -> str:
    return audio.parent.name if speaker_from == "dir" and audio.parent.name else key


def _group_lines(
    path: Path, key_of: callable
) -> tuple[dict[str, list[tuple[int, str | None, bytes]]], list[Reject]]:
    """key -> [(line number, decoded text or None if not UTF-8, raw key field)] in file order."""
    groups: dict[str, list[tuple[int, str | None, bytes]]] = {}
    rejects: list[Reject] = []
    for lineno, raw in iter_lines(path):
        res = key_of(lineno, raw)
        if isinstance(res, Reject):
            rejects.append(res)
            continue
        key, text = res
        groups.setdefault(key, []).append((lineno, text, raw))
    return groups, rejects


def _resolve_group(
    key: str, lines: list[tuple[int, str | None, bytes]], source: Path
) -> tuple[str | None, Reject | None]:
    """The text of a key seen on one good line, or why not."""
    if len(lines) > 1:
        nums = ", ".join(str(n) for n, _, _ in lines)
        return None, Reject(key, "duplicate_key", f"{source} lines {nums}")
    lineno, text, _ = lines[0]
    if text is None:
        return None, Reject(key, "non_utf8", f"{source} line {lineno} is not valid UTF-8")
    return text, None


def _decode_key(raw_key: bytes) -> str:
    return sanitize_key(raw_key.decode("utf-8", "replace"))


def from_wav_dir(
    wav_dir: str | os.PathLike, transcript: str | os.PathLike, speaker_from: str = "utt"
) -> AdapterResult:
    """Audio found recursively under ``wav_dir``; transcript format detected automatically."""
    wav_root, tpath = Path(wav_dir).resolve(), Path(transcript)
    if not tpath.is_file():
        raise FileNotFoundError(f"transcript not found: {tpath}")
    audio = find_audio(wav_root)
    fmt = detect_transcript_format(tpath)
    result = AdapterResult()

    def text_of(raw_text: bytes) -> str | None:
        try:
            return raw_text.decode("utf-8")
        except UnicodeDecodeError:
            return None

    if fmt == "aishell":
        by_stem: dict[str, list[Path]] = {}
        for p in audio:
            by_stem.setdefault(sanitize_key(p.stem), []).append(p)

        def key_of(lineno: int, raw: bytes) -> tuple[str, str | None]:
            k, t = _split_line(raw, None)
            return _decode_key(k), text_of(t)

        groups, result.rejects = _group_lines(tpath, key_of)
        for key, lines in groups.items():
            text, rej = _resolve_group(key, lines, tpath)
            paths = by_stem.get(key, [])
            if rej is None and len(paths) > 1:
                rej = Reject(key, "duplicate_key", "audio files " + ", ".join(map(str, paths)))
            if rej is None and not paths:
                rej = Reject(
                    key,
                    "no_audio",
                    f"{tpath}:{lines[0][0]} has no audio file {key}.wav/.flac under {wav_root}",
                )
            if rej is not None:
                result.rejects.append(rej)
                continue
            result.candidates.append(
                Candidate(
                    key,
                    str(paths[0]),
                    text,
                    _speaker(key, paths[0], speaker_from),
                    f"{tpath}:{lines[0][0]}",
                )
            )
        for stem, paths in by_stem.items():
            if stem not in groups:
                detail = "no transcript line for " + ", ".join(map(str, paths))
                result.rejects.append(Reject(stem, "no_transcript", detail))
        return result

    # PPASR: "<path relative to wav_dir>\t<text>"; keys come from the paths.
    audio_keys = {p.resolve(): path_key(p, wav_root) for p in audio}
    targets: dict[str, Path] = {}

    def key_of_path(lineno: int, raw: bytes) -> tuple[str, str | None] | Reject:
        if b"\t" not in raw:
            k, _ = _split_line(raw, None)
            return Reject(
                f"{_decode_key(k)}@line{lineno}",
                "bad_line",
                f"{tpath}:{lineno}: expected '<path>\\t<text>'",
            )
        k, t = _split_line(raw, b"\t")
        rel = k.decode("utf-8", "replace")
        p = Path(rel) if os.path.isabs(rel) else wav_root / rel
        key = path_key(p, wav_root)
        targets.setdefault(key, p)
        return key, text_of(t)

    groups, result.rejects = _group_lines(tpath, key_of_path)
    claimed: set[Path] = set()
    for key, lines in groups.items():
        text, rej = _resolve_group(key, lines, tpath)
        p = targets[key]
        if p.is_file():
            claimed.add(p.resolve())
        if rej is None and not p.is_file():
            rej = Reject(key, "no_audio", f"{tpath}:{lines[0][0]}: audio file {p} not found")
        if rej is not None:
            result.rejects.append(rej)
            continue
        result.candidates.append(
            Candidate(key, str(p), text, _speaker(key, p, speaker_from), f"{tpath}:{lines[0][0]}")
        )
    for resolved, key in audio_keys.items():
        if resolved not in claimed and key not in groups:
            result.rejects.append(
                Reject(key, "no_transcript", f"no transcript line for {resolved}")
            )
    return result


def from_kaldi_dir(data_dir: str | os.PathLike) -> AdapterResult:
    """An existing Kaldi data dir (``wav.scp``, ``text``, optional ``utt2spk``/``segments``)."""
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d}: missing {name}")
    result = AdapterResult()

    def read_table(name: str, report: bool = True) -> dict[str, str]:
        """Keys seen once on a UTF-8 line; other keys become rejects if ``report``."""
        path = d / name

        def key_of(lineno: int, raw: bytes) -> tuple[str, str | None]:
            k, v = _split_line(raw, None)
            try:
                return _decode_key(k), v.decode("utf-8")
            except UnicodeDecodeError:
                return _decode_key(k), None

        groups, rejects = _group_lines(path, key_of)
        table = {}
        for key, lines in groups.items():
            value, rej = _resolve_group(key, lines, path)
            if rej is not None:
                rejects.append(rej)
            else:
                table[key] = value
        if report:
            result.rejects.extend(rejects)
        return table

    wavs = read_table("wav.scp")
    texts = read_table("text")
    # A bad utt2spk line does not lose an utterance: it falls back to its own speaker id.
    utt2spk = read_table("utt2spk", report=False) if (d / "utt2spk").is_file() else {}
    segments: dict[str, Segment] | None = None
    if (d / "segments").is_file():
        segments = {}
        for utt, value in read_table("segments").items():
            parts = value.split()
            try:
                segments[utt] = Segment(parts[0], float(parts[1]), float(parts[2]))
            except (IndexError, ValueError):
                result.rejects.append(Reject(utt, "bad_line", f"{d / 'segments'}: {value!r}"))
    rejected = {r.key for r in result.rejects}
    used_recordings: set[str] = set()
    utt_keys = set(texts) | (set(segments) if segments is not None else set(wavs))
    for utt in sorted(utt_keys - rejected):
        if segments is not None:
            seg = segments.get(utt)
            if seg is None:
                result.rejects.append(
                    Reject(utt, "no_audio", f"{d / 'segments'} has no line for {utt}")
                )
                continue
            used_recordings.add(seg.recording)
            rec = seg.recording
        else:
            seg, rec = None, utt
        if utt not in texts:
            result.rejects.append(
                Reject(utt, "no_transcript", f"{d / 'text'} has no line for {utt}")
            )
        elif rec not in wavs:
            result.rejects.append(Reject(utt, "no_audio", f"{d / 'wav.scp'} has no entry {rec}"))
        else:
            result.candidates.append(
                Candidate(
                    utt,
                    wavs[rec],
                    texts[utt],
                    sanitize_key(utt2spk.get(utt, utt)) or utt,
                    f"{d / 'text'}",
                    seg,
                )
            )
    if segments is not None:
        for rec in sorted(set(wavs) - used_recordings - rejected):
            result.rejects.append(Reject(rec, "no_transcript", f"recording {rec} has no segments"))
    return result


def from_manifest(manifest: str | os.PathLike) -> AdapterResult:
    """JSON lines with ``audio_filepath``, ``text`` and optional ``duration`` (ignored: measured).

    The key is the audio path relative to the manifest's folder without extension ('/' → '-'),
    or the file name without extension for paths outside it.
    """
    mpath = Path(manifest)
    if not mpath.is_file():
        raise FileNotFoundError(f"manifest not found: {mpath}")
    root = mpath.parent.resolve()
    paths: dict[str, Path] = {}

    def key_of(lineno: int, raw: bytes) -> tuple[str, str | None] | Reject:
        bad_key = f"{mpath.name}@line{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Reject(bad_key, "non_utf8", f"{mpath} line {lineno} is not valid UTF-8")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return Reject(bad_key, "bad_line", f"{mpath}:{lineno}: invalid JSON ({exc.msg})")
        if not isinstance(obj, dict) or not isinstance(obj.get("audio_filepath"), str):
            return Reject(bad_key, "bad_line", f"{mpath}:{lineno}: no 'audio_filepath' string")
        ap = obj["audio_filepath"]
        p = Path(ap) if os.path.isabs(ap) else root / ap
        key = path_key(p, root)
        paths.setdefault(key, p)
        text = obj.get("text")
        return key, (text if isinstance(text, str) else "")

    groups, rejects = _group_lines(mpath, key_of)
    result = AdapterResult(rejects=rejects)
    for key, lines in groups.items():
        text, rej = _resolve_group(key, lines, mpath)
        if rej is None and not paths[key].is_file():
            rej = Reject(
                key, "no_audio", f"{mpath}:{lines[0][0]}: audio file {paths[key]} not found"
            )
        if rej is not None:
            result.rejects.append(rej)
        else:
            result.candidates.append(
                Candidate(key, str(paths[key]), text, key, f"{mpath}:{lines[0][0]}")
            )
    return result


def dedupe_rejects(rejects: Iterable[Reject]) -> list[Reject]:
    """One line per key (the first reason found wins), sorted by key."""
    seen: dict[str, Reject] = {}
    for r in rejects:
        seen.setdefault(r.key, r)
    return [seen[k] for k in sorted(seen)]
