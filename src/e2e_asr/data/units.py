"""Output units (``units.txt``) and the tokenizer that maps normalised text to unit ids.

Order follows ESPnet1's char_list: ``<blank>`` 0, ``<unk>`` 1, the units, ``<sos/eos>`` last.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from e2e_asr.data.io import atomic_write_lines
from e2e_asr.data.text import split_tokens

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
SPECIAL = (BLANK, UNK, SOS_EOS)
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class UnitsError(ValueError):
    """A malformed units file; the message names the file and line."""


def read_units(path: str | os.PathLike) -> list[str]:
    """Read ``<symbol> <id>`` lines; returns symbols indexed by id.

    ESPnet-style files that omit ``<blank>`` (ids starting at 1) or ``<sos/eos>`` are completed.
    """
    units: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise UnitsError(
                    f"{path}:{lineno}: expected '<symbol> <id>', got {line.rstrip()!r}"
                )
            sym, idx = parts[0], int(parts[1])
            if not units and idx == 1 and sym != BLANK:
                units.append(BLANK)
            if idx != len(units):
                raise UnitsError(f"{path}:{lineno}: id {idx} out of order (expected {len(units)})")
            units.append(sym)
    if not units:
        raise UnitsError(f"{path}: no units")
    if units[-1] != SOS_EOS:
        units.append(SOS_EOS)
    check_units(units, str(path))
    return units


def check_units(units: list[str], where: str = "units") -> None:
    """Raise UnitsError unless the list has the blank/unk/sos-eos layout and no duplicates."""
    if len(units) < 3 or units[0] != BLANK or units[1] != UNK or units[-1] != SOS_EOS:
        raise UnitsError(f"{where}: must start with {BLANK} {UNK} and end with {SOS_EOS}")
    seen: set[str] = set()
    for u in units:
        if u in seen:
            raise UnitsError(f"{where}: duplicate unit {u!r}")
        seen.add(u)


def write_units(path: str | os.PathLike, units: list[str]) -> None:
    check_units(units, str(path))
    atomic_write_lines(path, (f"{u} {i}" for i, u in enumerate(units)))


def text_chars(text: str) -> list[str]:
    """Characters of a normalised text that a character-unit model needs (spaces dropped)."""
    return [ch for tok in split_tokens(text) for ch in tok]


def build_units(texts: Iterable[str]) -> list[str]:
    """Units for a model trained from scratch: every character seen, sorted."""
    chars: set[str] = set()
    for text in texts:
        chars.update(text_chars(text))
    chars.difference_update(SPECIAL)
    return [BLANK, UNK, *sorted(chars), SOS_EOS]


def extend_units(units: list[str], new: Iterable[str]) -> list[str]:
    """Insert new units before ``<sos/eos>`` (existing ids are unchanged)."""
    known = set(units)
    extra: list[str] = []
    for u in new:
        if u not in known:
            known.add(u)
            extra.append(u)
    return [*units[:-1], *extra, units[-1]]


class Tokenizer:
    """Normalised text to units: a latin word whole if it is a unit, else letter by letter."""

    def __init__(self, units: list[str]) -> None:
        check_units(units)
        self.units = list(units)
        self.index = {u: i for i, u in enumerate(units)}
        self.unk_id = self.index[UNK]

    @property
    def odim(self) -> int:
        return len(self.units)

    def tokens(self, text: str) -> list[str]:
        """Unit strings for ``text``; characters that are not units are returned as they are."""
        out: list[str] = []
        for tok in split_tokens(text):
            if tok in self.index or len(tok) == 1:
                out.append(tok)
            else:
                out.extend(tok)
        return out

    def oov(self, text: str) -> list[str]:
        return [t for t in self.tokens(text) if t not in self.index]

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, self.unk_id) for t in self.tokens(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; blank and sos/eos are dropped, whole latin words are space-separated."""
        out = ""
        prev_word = False
        for i in ids:
            sym = self.units[int(i)]
            if sym in (BLANK, SOS_EOS):
                continue
            word = len(sym) > 1 and not _CJK_RE.search(sym) and sym != UNK
            if word and prev_word:
                out += " "
            out += sym
            prev_word = word
        return out
