"""Guarantee 5: mutated audio files and transcript lines through stage 0 (steps/make_data.py)
and the accepted ones through stage 1 (steps/make_feats.py): no crash, every input key is in
exactly one of the data dir and rejects.tsv, each reject with a reason, every accepted
utterance gets finite features.

The corpus is generated from a fixed seed: truncated files, random bytes, wrong headers, huge
declared sizes, NaN/inf/huge samples in float wavs, extreme durations and rates, many channels,
dangling links, undecodable file names; transcript lines with control characters, GBK /
Latin-1 / UTF-16 bytes, lone surrogates, BOMs, NULs, huge lines, duplicates, missing texts.
"""

from __future__ import annotations

import os
import struct
import unicodedata
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest_data import read_table
from reliability_helpers import REPO, py, run

from e2e_asr.data.adapters import sanitize_key

SR = 16000
REASONS = {
    "no_audio", "no_transcript", "duplicate_key", "non_utf8", "empty_text", "empty_audio",
    "unreadable_audio", "corrupt_audio", "too_short", "too_long", "segment_out_of_range",
    "bad_line", "conversion_unavailable",
}  # fmt: skip


def _pcm16(seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    n = max(int(seconds * sr), 0)
    t = np.arange(n) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _wav_bytes(x: np.ndarray, sr: int = SR, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def _riff(fmt_fields: bytes, data: bytes, data_size: int | None = None,
          riff_size: int | None = None, fmt_size: int | None = None) -> bytes:  # fmt: skip
    fmt_chunk = b"fmt " + struct.pack("<I", fmt_size or len(fmt_fields)) + fmt_fields
    data_chunk = b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    body = b"WAVE" + fmt_chunk + data_chunk
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _fmt(tag: int = 1, ch: int = 1, sr: int = SR, bits: int = 16) -> bytes:
    block = ch * bits // 8
    return struct.pack("<HHIIHH", tag, ch, sr, sr * block, block, bits)


def make_audio(rng: np.random.Generator) -> dict[str, bytes]:
    """name (without .wav) -> file bytes: the mutated audio files."""
    ok = _wav_bytes(_pcm16(1.0, rng))
    files: dict[str, bytes] = {}
    for i in range(12):  # truncated anywhere, in the header too
        cut = int(rng.integers(1, len(ok) - 1)) if i > 2 else [4, 20, 43][i]
        files[f"trunc{i:02d}"] = ok[:cut]
    for i in range(10):  # random bytes, some with a plausible start
        junk = rng.bytes(int(rng.integers(1, 5000)))
        files[f"random{i:02d}"] = (b"RIFF" + junk) if i % 2 else junk
    for i in range(12):  # flipped bytes anywhere in a good file
        b = bytearray(ok)
        for pos in rng.integers(0, 64 if i < 6 else len(b), size=4):
            b[pos] ^= int(rng.integers(1, 256))
        files[f"flip{i:02d}"] = bytes(b)
    data = _wav_bytes(_pcm16(0.5, rng))[44:]
    wrong = {
        "hdr_rifx": b"RIFX" + ok[4:],
        "hdr_avi": ok[:8] + b"AVI " + ok[12:],
        "hdr_tag9999": _riff(_fmt(tag=0x9999), data),
        "hdr_bits7": _riff(_fmt(bits=7), data),
        "hdr_bits0": _riff(_fmt(bits=0), data),
        "hdr_ch0": _riff(_fmt(ch=0), data),
        "hdr_ch300": _riff(_fmt(ch=300), data[: len(data) // 600 * 600]),
        "hdr_sr0": _riff(_fmt(sr=0), data),
        "hdr_sr1": _riff(_fmt(sr=1), data[:40]),
        "hdr_sr_huge": _riff(_fmt(sr=2**31 - 1), data),
        "hdr_nodata": b"RIFF" + struct.pack("<I", 28) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
        + _fmt(),
        "hdr_nofmt": b"RIFF" + struct.pack("<I", 8 + len(data)) + b"WAVEdata"
        + struct.pack("<I", len(data)) + data,
        "size_data_huge": _riff(_fmt(), data, data_size=0x7FFFFFF0),
        "size_data_ffff": _riff(_fmt(), data, data_size=0xFFFFFFFF),
        "size_data_odd": _riff(_fmt(), data[:-1], data_size=len(data) - 1),
        "size_riff_huge": _riff(_fmt(), data, riff_size=0xFFFFFFF0),
        "size_riff_zero": _riff(_fmt(), data, riff_size=0),
        "size_fmt_huge": _riff(_fmt(), data, fmt_size=0x7FFFFFF0),
        "size_data_zero": _riff(_fmt(), data, data_size=0),
        "header_only": _riff(_fmt(), b""),
    }  # fmt: skip
    files.update(wrong)
    bad_float = {
        "float_nan": np.where(np.arange(SR) % 97 == 0, np.nan, 0.1),
        "float_inf": np.where(np.arange(SR) == 5000, np.inf, 0.1),
        "float_neginf": np.full(SR, -np.inf),
        "float_huge": np.full(SR, 1e30),
        "float_big": np.full(SR, 3.0),  # out of [-1, 1], finite
        "float_denormal": np.full(SR, 1e-40),
        "float_zero": np.zeros(SR),
        "float64_nan": np.full(SR, np.nan),
    }
    for name, x in bad_float.items():
        sub = "DOUBLE" if name.startswith("float64") else "FLOAT"
        files[name] = _wav_bytes(x.astype(np.float64 if sub == "DOUBLE" else np.float32),
                                 subtype=sub)  # fmt: skip
    durations = {"dur_0": 0.0, "dur_1sample": 1 / SR, "dur_0.19": 0.19, "dur_0.2": 0.2,
                 "dur_20.5": 20.5, "dur_19.9": 19.9}  # fmt: skip
    for name, sec in durations.items():
        files[name] = _wav_bytes(_pcm16(sec, rng)) if sec > 0 else _riff(_fmt(), b"")
    variants = {
        "rate_8k": _wav_bytes(_pcm16(1.0, rng, 8000), 8000),
        "rate_44k1": _wav_bytes(_pcm16(1.0, rng, 44100), 44100),
        "rate_384k": _wav_bytes(_pcm16(0.5, rng, 384000), 384000),
        "rate_1k": _wav_bytes(_pcm16(1.0, rng, 1000), 1000),
        "ch_8": _wav_bytes(np.tile(_pcm16(0.5, rng)[:, None], (1, 8))),
        "pcm24": _wav_bytes(_pcm16(0.5, rng), subtype="PCM_24"),
        "pcm_u8": _wav_bytes(_pcm16(0.5, rng), subtype="PCM_U8"),
        "ulaw": _wav_bytes(_pcm16(0.5, rng), subtype="ULAW"),
        "alaw": _wav_bytes(_pcm16(0.5, rng), subtype="ALAW"),
        "clipped": _wav_bytes(np.sign(_pcm16(0.5, rng))),
        "empty": b"",
    }
    files.update(variants)
    return files


# transcript texts: (name, raw bytes of the text); each goes on a line "<key> <text>"
TEXTS: list[tuple[str, bytes]] = [
    ("ok", "今天天气很好".encode()),
    ("ctrl_nul", "你\x00好".encode()),
    ("ctrl_bell", "你\x07好\x08".encode()),
    ("ctrl_ansi", "\x1b[31m红色\x1b[0m".encode()),
    ("ctrl_del", "删\x7f除".encode()),
    ("ctrl_cr", "回\r车".encode()),
    ("ctrl_ff_vt", "换\x0c页\x0b".encode()),
    ("zero_width", "零\u200b宽\ufeff".encode()),
    ("rtl_override", "\u202e反向\u202c".encode()),
    ("combining", "e\u0301\u0300好".encode()),
    ("emoji", "好😀👍🏽".encode()),
    ("fullwidth", "ＡＢＣ１２３，你好！".encode()),
    ("gbk", "你好世界".encode("gbk")),
    ("gb18030", "鳯凰".encode("gb18030")),
    ("big5", "臺灣".encode("big5")),
    ("latin1", "café".encode("latin-1")),
    ("utf16", "你好".encode("utf-16")),
    ("cesu_surrogate", b"\xed\xa0\x80\xed\xb0\x80"),
    ("overlong", b"\xc0\xaf"),
    ("mixed", "你好".encode() + "世界".encode("gbk")),
    ("only_punct", "，。！？".encode()),
    ("only_space", b"   \t  "),
    ("huge", ("长" * 20000).encode()),
    ("private_use", "\ue000\uf8ff好".encode()),
    ("noncharacter", "\ufffe\uffff好".encode()),
]


def make_corpus(root: Path, seed: int = 7) -> tuple[Path, Path, set[str]]:
    """wav dir + AISHELL transcript; returns them and the set of input keys."""
    rng = np.random.default_rng(seed)
    wav_dir, keys = root / "wav", set()
    wav_dir.mkdir(parents=True)
    lines: list[bytes] = []
    for name, data in make_audio(rng).items():
        (wav_dir / f"{name}.wav").write_bytes(data)
        keys.add(name)
        lines.append(name.encode() + b" " + TEXTS[0][1])  # a good text: the audio is tested
    good = _wav_bytes(_pcm16(1.0, rng))
    for name, text in TEXTS:  # good audio: the text is tested
        key = f"text_{name}"
        (wav_dir / f"{key}.wav").write_bytes(good)
        keys.add(key)
        lines.append(key.encode() + b" " + text)
    # keys that are odd themselves, and lines without audio or text
    odd_lines = [
        b"no_audio_line \xe4\xbd\xa0\xe5\xa5\xbd",
        b"key_only",
        b"dup_key \xe4\xb8\x80",
        b"dup_key \xe4\xba\x8c",
        b"ctrl\x01key \xe4\xbd\xa0",
        b"nul\x00key \xe4\xbd\xa0",
        b"gbk_key_\xc4\xe3 \xe4\xbd\xa0",
        b"\x1b[1mansi_key \xe4\xbd\xa0",
        b"tab\tsep\t\xe4\xbd\xa0",
        "全角键　你好".encode(),
        b"   leading_space \xe4\xbd\xa0   ",
        b"crlf_line \xe4\xbd\xa0\r",
        b"k" * 3000 + b" \xe4\xbd\xa0",
    ]
    (wav_dir / "dup_key.wav").write_bytes(good)
    (wav_dir / "sub").mkdir()
    (wav_dir / "sub" / "dup_key.wav").write_bytes(good)  # the same key twice as audio
    (wav_dir / "sub" / "UPPER.WAV").write_bytes(good)  # no transcript line
    keys.update({"dup_key", "UPPER"})
    os.symlink(wav_dir / "missing_target.wav", wav_dir / "dangling.wav")
    lines.append(b"dangling " + TEXTS[0][1])
    keys.add("dangling")
    bad_name = os.fsdecode(b"bad_name_\xff\xfe")
    (wav_dir / f"{bad_name}.wav").write_bytes(good)
    keys.add(sanitize_key(b"bad_name_\xff\xfe".decode("utf-8", "replace")))
    lines.append(b"bad_name_\xff\xfe " + TEXTS[0][1])
    for raw in odd_lines:
        lines.append(raw)
        k = raw.strip().split(None, 1)[0]
        keys.add(sanitize_key(k.decode("utf-8", "replace")))
    transcript = root / "transcript.txt"
    transcript.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    return wav_dir, transcript, keys


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rel_fuzz")
    wav_dir, transcript, keys = make_corpus(tmp)
    out = tmp / "data"
    rc0, text0 = run(
        [*py("make_data.py"), "--wav-dir", str(wav_dir), "--transcript", str(transcript),
         "--out-dir", str(out), "--config", str(REPO / "conf" / "data.yaml")],
        tmp / "make_data.out",
    )  # fmt: skip
    conf = tmp / "fbank.yaml"
    conf.write_text((REPO / "conf" / "fbank.yaml").read_text().replace("dither: 1.0", "dither: 0"))
    rc1, text1 = (None, "")
    if rc0 == 0:
        rc1, text1 = run(
            [*py("make_feats.py"), "--data-dir", str(out), "--feat-config", str(conf), "--nj",
             "2"],
            tmp / "make_feats.out",
        )  # fmt: skip
    return {"keys": keys, "out": out, "stage0": (rc0, text0), "stage1": (rc1, text1),
            "n_files": len(list(wav_dir.rglob("*"))), "n_lines": len(
                transcript.read_bytes().splitlines())}  # fmt: skip


def _rejects(out: Path) -> dict[str, str]:
    got: dict[str, str] = {}
    for line in (out / "rejects.tsv").read_text(encoding="utf-8").split("\n"):
        if line:
            key, _, reason = line.partition("\t")
            assert key not in got, f"{key!r} twice in rejects.tsv"
            got[key] = reason
    return got


def test_fuzzed_inputs_are_all_accounted_for(fuzzed: dict) -> None:
    rc, text = fuzzed["stage0"]
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text
    assert fuzzed["n_files"] >= 100 and fuzzed["n_lines"] >= 100
    out = fuzzed["out"]
    rejects = _rejects(out)
    accepted = list(read_table(out / "text"))
    assert accepted == list(read_table(out / "wav.scp")) == sorted(accepted)
    assert not set(accepted) & set(rejects)  # never both
    assert set(accepted) | set(rejects) == fuzzed["keys"]  # every input key, nothing invented
    for key, reason in rejects.items():  # each with a known category and a detail
        category = reason.split(":", 1)[0]
        assert category in REASONS and len(reason) > len(category) + 2, (key, reason)
    counts = {c: sum(r.startswith(c + ":") for r in rejects.values()) for c in REASONS}
    print(f"fuzz: {len(fuzzed['keys'])} keys, {len(accepted)} accepted, "
          f"{len(rejects)} rejected {dict((k, v) for k, v in counts.items() if v)}")  # fmt: skip
    assert f"{len(accepted)} accepted, {len(rejects)} rejected" in text
    # spot checks that the reason is the right one
    for key, category in {
        "trunc05": "corrupt_audio",
        "float_nan": "corrupt_audio",
        "float_inf": "corrupt_audio",
        "float_huge": "corrupt_audio",
        "empty": "empty_audio",
        "dur_0.19": "too_short",
        "dur_20.5": "too_long",
        "text_gbk": "non_utf8",
        "text_only_punct": "empty_text",
        "dup_key": "duplicate_key",
        "no_audio_line": "no_audio",
        "UPPER": "no_transcript",
        "size_data_huge": "corrupt_audio",
    }.items():
        assert rejects.get(key, "").startswith(category + ":"), (key, rejects.get(key))
    assert "the file name is not valid UTF-8" in rejects["bad_name_\ufffd\ufffd"]
    # accepted transcripts carry no control or format characters into the data dir
    texts = (out / "text").read_text(encoding="utf-8").split("\n")
    hidden = [t for t in texts if any(unicodedata.category(c) in ("Cc", "Cf") for c in t)]
    assert not hidden, hidden
    assert "text_ctrl_nul 你好" in texts and "text_zero_width 零宽" in texts
    for key in ("text_ok", "dur_19.9", "rate_8k", "ch_8", "pcm24", "text_fullwidth", "float_big"):
        assert key in accepted, (key, rejects.get(key))


def test_accepted_fuzzed_inputs_make_finite_features(fuzzed: dict) -> None:
    rc, text = fuzzed["stage1"]
    assert rc == 0, text[-3000:]
    out = fuzzed["out"]
    feats = kaldiio.load_scp(str(out / "feats.scp"))
    assert list(feats) == list(read_table(out / "text"))
    for key in feats:
        m = feats[key]
        assert m.ndim == 2 and m.shape[0] > 0 and np.isfinite(m).all(), key
