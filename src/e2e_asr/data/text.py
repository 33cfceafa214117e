"""Transcript normalisation and tokenisation (Chinese per character, latin words whole)."""

from __future__ import annotations

import re
import unicodedata

# Ideographs (CJK unified + extensions + compatibility), kana and hangul: one token per char.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff"
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_SPACE_RE = re.compile(r"\s+")
_CASES = ("upper", "lower", "keep")
_HIDDEN = ("Cc", "Cf")


def to_halfwidth(text: str) -> str:
    """Map full-width ASCII variants (U+FF01..U+FF5E) and the ideographic space to ASCII."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        elif code == 0x3000:
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def remove_punctuation(text: str) -> str:
    """Replace punctuation and symbols by spaces; keep an apostrophe inside a latin word."""
    out = []
    n = len(text)
    for i, ch in enumerate(text):
        if (
            ch == "'"
            and 0 < i < n - 1
            and text[i - 1].isascii()
            and text[i - 1].isalpha()
            and text[i + 1].isascii()
            and text[i + 1].isalpha()
        ):
            out.append(ch)
        elif _is_punct(ch):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def normalize(
    text: str,
    fullwidth_to_halfwidth: bool = True,
    remove_punct: bool = True,
    case: str = "upper",
) -> str:
    """Normalise a transcript; control/format characters are dropped, whitespace collapsed.

    ``case`` applies to latin letters: ``upper`` (default, ESPnet Mandarin char lists use
    upper-case English), ``lower`` or ``keep``.
    """
    if case not in _CASES:
        raise ValueError(f"case must be one of {_CASES}, got {case!r}")
    # control and format characters (NUL, ESC, DEL, zero-width space, BOM, bidi overrides)
    # are never spoken; left in, they reach the Kaldi text file and become units
    text = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) not in _HIDDEN)
    if fullwidth_to_halfwidth:
        text = to_halfwidth(text)
    if remove_punct:
        text = remove_punctuation(text)
    if case == "upper":
        text = text.upper()
    elif case == "lower":
        text = text.lower()
    return _SPACE_RE.sub(" ", text).strip()


def split_tokens(text: str) -> list[str]:
    """CJK characters one by one; runs of other non-space characters (latin words) whole."""
    return _TOKEN_RE.findall(text)
