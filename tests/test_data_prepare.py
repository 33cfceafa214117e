"""Stage 0: each adapter, each kind of broken input, every key accounted for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest_data import read_table, rejects, run_step, write_wav

from e2e_asr.data.audio import load_audio
from e2e_asr.data.prepare import make_data_dir
from e2e_asr.data.validate import DataConfig


def _broken_aishell_corpus(root: Path) -> tuple[Path, Path, dict[str, str], set[str]]:
    """wav dir + AISHELL-style transcript with one example of every defect."""
    wav = root / "wav"
    write_wav(wav / "S0001" / "good1.wav", 1.0, seed=1)
    write_wav(wav / "S0001" / "good2.flac", 1.2, seed=2, fmt="FLAC")
    write_wav(wav / "S0002" / "stereo44k.wav", 1.0, sr=44100, channels=2, seed=3)
    write_wav(wav / "S0002" / "rate8k.wav", 1.0, sr=8000, seed=4)
    write_wav(wav / "S0002" / "short.wav", 0.05, seed=5)
    write_wav(wav / "S0002" / "long.wav", 3.0, seed=6)
    (wav / "S0002" / "empty.wav").write_bytes(b"")
    (wav / "S0002" / "garbage.wav").write_bytes(b"this is not audio" * 20)
    whole = write_wav(wav / "S0003" / "tmp.wav", 1.0, seed=7).read_bytes()
    (wav / "S0003" / "tmp.wav").unlink()
    (wav / "S0003" / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    write_wav(wav / "S0003" / "notext.wav", 1.0, seed=8)
    write_wav(wav / "S0003" / "duptext.wav", 1.0, seed=9)
    write_wav(wav / "S0003" / "emptytext.wav", 1.0, seed=10)
    write_wav(wav / "S0003" / "badbytes.wav", 1.0, seed=11)
    write_wav(wav / "S0003" / "twice.wav", 1.0, seed=12)
    write_wav(wav / "S0004" / "twice.wav", 1.0, seed=13)
    lines = [
        "good1 今天 天气 很好",
        "good2 我爱ＮＬＰ，真的！",
        "stereo44k 双声道",
        "rate8k 八千",
        "short 短",
        "long 长",
        "empty 空",
        "garbage 乱码",
        "truncated 截断",
        "noaudio 没有 音频",
        "duptext 第一",
        "duptext 第二",
        "emptytext ，。！",
        "twice 两个 文件",
    ]
    transcript = root / "transcript.txt"
    data = ("\n".join(lines) + "\n").encode("utf-8") + b"badbytes \xe4\xbd\xa0\xff\xfe\n"
    transcript.write_bytes(data)
    expected = {
        "short": "too_short",
        "long": "too_long",
        "empty": "empty_audio",
        "garbage": "unreadable_audio",
        "truncated": "corrupt_audio",
        "noaudio": "no_audio",
        "notext": "no_transcript",
        "duptext": "duplicate_key",
        "emptytext": "empty_text",
        "badbytes": "non_utf8",
        "twice": "duplicate_key",
    }
    accepted = {"good1", "good2", "stereo44k", "rate8k"}
    return wav, transcript, expected, accepted


@pytest.fixture
def cfg() -> DataConfig:
    return DataConfig.from_dict({"min_duration": 0.2, "max_duration": 2.5})


def test_wav_dir_every_broken_input(tmp_path: Path, cfg: DataConfig) -> None:
    wav, transcript, expected, accepted = _broken_aishell_corpus(tmp_path)
    out = tmp_path / "data"
    report = make_data_dir(out, wav_dir=wav, transcript=transcript, config=cfg)
    got = rejects(out)
    assert got == expected
    text = read_table(out / "text")
    assert set(text) == accepted
    # every input key in exactly one of the two
    assert not set(text) & set(got)
    assert text["good2"] == "我爱NLP 真的"
    for name in ("wav.scp", "utt2spk", "spk2utt", "text", "utt2dur"):
        keys = list(read_table(out / name))
        assert keys == sorted(keys), name
    assert set(read_table(out / "wav.scp")) == accepted
    summary = report.summary()
    assert summary.startswith("4 accepted, 11 rejected (corrupt_audio: 1, duplicate_key: 2,")
    assert "resampled from 44100 Hz: 1" in summary and "downmixed from 2 channels: 1" in summary
    assert "resampled from 8000 Hz: 1" in summary
    # the non-UTF-8 reason names the line number
    line = [x for x in (out / "rejects.tsv").read_text().splitlines() if x.startswith("badbytes")]
    assert "line 15" in line[0]


def test_converted_audio_reads_at_target_rate(tmp_path: Path, cfg: DataConfig) -> None:
    wav, transcript, _, _ = _broken_aishell_corpus(tmp_path)
    out = tmp_path / "data"
    make_data_dir(out, wav_dir=wav, transcript=transcript, config=cfg)
    scp = read_table(out / "wav.scp")
    assert scp["stereo44k"].endswith("|") and scp["rate8k"].endswith("|")
    assert not scp["good1"].endswith("|")
    for key in ("stereo44k", "rate8k"):
        x = load_audio(scp[key], 16000)
        assert x.ndim == 1 and abs(len(x) - 16000) <= 2


def test_cli_summary_and_speaker_from_dir(tmp_path: Path) -> None:
    wav, transcript, expected, accepted = _broken_aishell_corpus(tmp_path)
    cfg = tmp_path / "data.yaml"
    cfg.write_text("min_duration: 0.2\nmax_duration: 2.5\n")
    out = tmp_path / "data"
    res = run_step(
        "make_data.py",
        "--out-dir",
        out,
        "--wav-dir",
        wav,
        "--transcript",
        transcript,
        "--config",
        cfg,
        "--speaker-from",
        "dir",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("4 accepted, 11 rejected (")
    assert read_table(out / "utt2spk")["good1"] == "S0001"
    assert read_table(out / "spk2utt")["S0001"] == "good1 good2"


def test_ppasr_transcript_detected(tmp_path: Path) -> None:
    wav = tmp_path / "audio"
    write_wav(wav / "spk1" / "001.wav", 1.0, seed=1)
    write_wav(wav / "spk2" / "001.wav", 1.0, seed=2)  # same basename, other folder
    write_wav(wav / "spk2" / "002.flac", 1.0, seed=3, fmt="FLAC")
    write_wav(wav / "spk3" / "orphan.wav", 1.0, seed=4)
    transcript = tmp_path / "manifest.txt"
    transcript.write_text(
        "spk1/001.wav\t你好 world\nspk2/001.wav\t再见\nspk2/002.flac\t第三\n"
        "spk9/missing.wav\t不在\nno tab here\n",
        encoding="utf-8",
    )
    out = tmp_path / "data"
    make_data_dir(out, wav_dir=wav, transcript=transcript)
    assert read_table(out / "text") == {
        "spk1-001": "你好 WORLD",
        "spk2-001": "再见",
        "spk2-002": "第三",
    }
    got = rejects(out)
    assert got["spk9-missing"] == "no_audio"
    assert got["spk3-orphan"] == "no_transcript"
    assert [r for r in got.values() if r == "bad_line"] == ["bad_line"]
    assert len(got) == 3


def test_kaldi_dir_with_segments(tmp_path: Path) -> None:
    rec = write_wav(tmp_path / "rec1.wav", 3.0, seed=1)
    rec2 = write_wav(tmp_path / "rec2.wav", 1.0, seed=2)
    src = tmp_path / "kaldi"
    src.mkdir()
    (src / "wav.scp").write_text(f"rec1 {rec}\nrec2 cat {rec2} |\nrec3 {tmp_path}/gone.wav\n")
    (src / "segments").write_text(
        "rec1-a rec1 0.00 1.00\nrec1-b rec1 1.00 2.50\nrec1-c rec1 2.50 9.00\n"
        "rec2-a rec2 0.10 -1\nrec3-a rec3 0 1\nrec9-a rec9 0 1\n"
    )
    (src / "text").write_text(
        "rec1-a 一\nrec1-b 二\nrec1-c 三\nrec2-a 四\nrec3-a 五\nrec9-a 六\nnoseg 七\n"
    )
    (src / "utt2spk").write_text("rec1-a A\nrec1-b A\nrec1-c A\nrec2-a B\n")
    out = tmp_path / "data"
    make_data_dir(out, kaldi_dir=src)
    assert set(read_table(out / "text")) == {"rec1-a", "rec1-b", "rec2-a"}
    assert rejects(out) == {
        "rec1-c": "segment_out_of_range",
        "rec3-a": "unreadable_audio",
        "rec9-a": "no_audio",
        "noseg": "no_audio",
    }
    segs = read_table(out / "segments")
    assert segs["rec1-b"] == "rec1 1.000 2.500"
    assert read_table(out / "wav.scp")["rec2"] == f"cat {rec2} |"
    assert read_table(out / "utt2spk") == {"rec1-a": "A", "rec1-b": "A", "rec2-a": "B"}
    assert read_table(out / "utt2dur")["rec2-a"] == "0.900"


def test_kaldi_dir_without_segments(tmp_path: Path) -> None:
    a = write_wav(tmp_path / "a.wav", 1.0, seed=1)
    src = tmp_path / "kaldi"
    src.mkdir()
    (src / "wav.scp").write_text(f"u1 {a}\nu2 {a}\nu2 {a}\nu3 {a}\n")
    (src / "text").write_text("u1 一\nu2 二\nu4 四\n")
    out = tmp_path / "data"
    make_data_dir(out, kaldi_dir=src)
    assert read_table(out / "text") == {"u1": "一"}
    assert rejects(out) == {"u2": "duplicate_key", "u3": "no_transcript", "u4": "no_audio"}
    assert read_table(out / "utt2spk") == {"u1": "u1"}


def test_manifest_jsonl(tmp_path: Path) -> None:
    write_wav(tmp_path / "clips" / "x.wav", 1.0, seed=1)
    write_wav(tmp_path / "clips" / "y.flac", 1.0, seed=2, fmt="FLAC")
    outside = write_wav(tmp_path.parent / f"{tmp_path.name}_abs" / "z.wav", 1.0, seed=3)
    m = tmp_path / "train.jsonl"
    rows = [
        {"audio_filepath": "clips/x.wav", "text": "Hello World", "duration": 1.0},
        {"audio_filepath": "clips/y.flac", "text": "中文"},
        {"audio_filepath": str(outside), "text": "绝对 路径"},
        {"audio_filepath": "clips/none.wav", "text": "无"},
        {"text": "no path"},
    ]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken json\n"
    m.write_bytes(body.encode() + b'{"audio_filepath": "clips/x2.wav", "text": "\xff"}\n')
    out = tmp_path / "data"
    try:
        make_data_dir(out, manifest=m)
    finally:
        shutil.rmtree(outside.parent)
    assert read_table(out / "text") == {
        "clips-x": "HELLO WORLD",
        "clips-y": "中文",
        "z": "绝对 路径",
    }
    assert rejects(out) == {
        "clips-none": "no_audio",
        "train.jsonl@line5": "bad_line",
        "train.jsonl@line6": "bad_line",
        "train.jsonl@line7": "non_utf8",
    }


def test_rerun_is_idempotent(tmp_path: Path, cfg: DataConfig) -> None:
    wav, transcript, _, _ = _broken_aishell_corpus(tmp_path)
    out = tmp_path / "data"
    make_data_dir(out, wav_dir=wav, transcript=transcript, config=cfg)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    make_data_dir(out, wav_dir=wav, transcript=transcript, config=cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "d.yaml"
    p.write_text("min_durration: 1\n")
    with pytest.raises(ValueError, match="min_durration"):
        DataConfig.from_yaml(p)


def test_bom_and_gbk_transcripts(tmp_path: Path) -> None:
    wav = tmp_path / "wav"
    write_wav(wav / "a.wav", 1.0, seed=1)
    write_wav(wav / "b.wav", 1.0, seed=2)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + "a 你好\nb 再见\n".encode())
    make_data_dir(tmp_path / "d1", wav_dir=wav, transcript=bom)
    assert read_table(tmp_path / "d1" / "text") == {"a": "你好", "b": "再见"}
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("a 你好\nb 再见\n".encode("gbk"))
    res = run_step(
        "make_data.py", "--out-dir", tmp_path / "d2", "--wav-dir", wav, "--transcript", gbk
    )
    assert res.returncode == 1
    assert res.stdout.startswith("0 accepted, 2 rejected (non_utf8: 2)")
    assert "iconv -f GBK" in res.stderr
