"""Text normalisation, tokenisation and units."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_data import run_step

from e2e_asr.data.text import normalize, split_tokens
from e2e_asr.data.units import (
    Tokenizer,
    UnitsError,
    build_units,
    extend_units,
    read_units,
    write_units,
)


def test_normalize_options() -> None:
    raw = "ＡＢＣ　１２３，你好！Hello, World. don't"
    assert normalize(raw) == "ABC 123 你好 HELLO WORLD DON'T"
    assert normalize(raw, case="lower") == "abc 123 你好 hello world don't"
    assert normalize(raw, remove_punct=False, case="keep") == "ABC 123,你好!Hello, World. don't"
    assert normalize(raw, fullwidth_to_halfwidth=False, case="keep").startswith("ＡＢＣ")
    assert normalize("。，、；：？！“”《》") == ""
    with pytest.raises(ValueError, match="case"):
        normalize("x", case="title")


def test_split_tokens_mixed() -> None:
    assert split_tokens("我爱NLP技术 iPhone12 很好") == [
        "我",
        "爱",
        "NLP",
        "技",
        "术",
        "iPhone12",
        "很",
        "好",
    ]
    assert split_tokens("今天 天气") == ["今", "天", "天", "气"]


def test_build_units_order_and_roundtrip(tmp_path: Path) -> None:
    units = build_units(["你好 AB", "好的"])
    assert units == ["<blank>", "<unk>", "A", "B", "你", "好", "的", "<sos/eos>"]
    write_units(tmp_path / "units.txt", units)
    assert (tmp_path / "units.txt").read_text().splitlines()[0] == "<blank> 0"
    assert read_units(tmp_path / "units.txt") == units


def test_read_espnet_style_units_completed(tmp_path: Path) -> None:
    p = tmp_path / "u.txt"
    p.write_text("<unk> 1\n你 2\n好 3\n", encoding="utf-8")
    assert read_units(p) == ["<blank>", "<unk>", "你", "好", "<sos/eos>"]
    p.write_text("<blank> 0\n<unk> 1\n好 5\n", encoding="utf-8")
    with pytest.raises(UnitsError, match=r"u\.txt:3"):
        read_units(p)


def test_tokenizer_words_letters_and_unk() -> None:
    units = ["<blank>", "<unk>", "你", "好", "OK", "A", "I", "<sos/eos>"]
    tok = Tokenizer(units)
    assert tok.tokens("你好 OK AI 坏") == ["你", "好", "OK", "A", "I", "坏"]
    assert tok.encode("你好 OK AI 坏") == [2, 3, 4, 5, 6, 1]
    assert tok.oov("你好 AIX 坏") == ["X", "坏"]
    assert tok.decode([0, 2, 3, 4, 7]) == "你好OK"
    ext = extend_units(units, ["坏", "X", "坏"])
    assert ext == ["<blank>", "<unk>", "你", "好", "OK", "A", "I", "坏", "X", "<sos/eos>"]


def test_make_units_cli(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "text").write_text("u1 今天 天气\nu2 好 OK\n", encoding="utf-8")
    res = run_step("make_units.py", "--data-dir", d, "--out", tmp_path / "units.txt")
    assert res.returncode == 0, res.stderr
    assert read_units(tmp_path / "units.txt") == [
        "<blank>",
        "<unk>",
        "K",
        "O",
        "今",
        "天",
        "好",
        "气",
        "<sos/eos>",
    ]
