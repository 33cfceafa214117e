"""Text side of the synthetic demo corpus: a homophone-free character set and sentences.

espeak-ng speaks tonal pinyin, so two characters with the same toned syllable sound exactly
alike and no acoustic model could tell them apart; random word strings give too little context
to help. We therefore keep one character per toned syllable (the most frequent one), so that a
character error is always an error about what was heard. Polyphonic characters (more than one
reading in pypinyin) are left out for the same reason: their spoken syllable would depend on
context we do not control.

The words come from the dictionary shipped inside the jieba package (``dict.txt``: ``word freq
tag`` lines), restricted to words made only of characters in the set. The *target* domain's
vocabulary is the place names and organisation names (jieba tags ``ns``/``nt``), which the
source text never uses, so the target domain has words (and character sequences) that are
rare for the base model.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_CJK_WORD = re.compile(r"^[\u4e00-\u9fff]+$")
DOMAIN_TAGS = frozenset({"ns", "nt"})  # place names, organisations: the target domain's words
# The dictionary is web text; keep words a demo should not print out of its synthetic sentences.
BLOCKED_WORDS = frozenset({"做爱", "性爱", "爱爱", "色情", "强奸", "性交", "死人", "杀人", "死者"})


def jieba_dict_path() -> Path:
    """The word list shipped with the jieba package (no download)."""
    import jieba

    return Path(jieba.__file__).parent / "dict.txt"


@dataclass(frozen=True)
class Lexicon:
    """Character set (char -> toned syllable) and the words that use only those characters."""

    syllable: dict[str, str]  # character -> pinyin TONE3 syllable (neutral tone = 5)
    words: list[tuple[str, int, str]]  # (word, jieba frequency, jieba POS tag)

    @property
    def charset(self) -> list[str]:
        return sorted(self.syllable)

    def to_pinyin(self, text: str) -> str:
        """Space-separated tonal pinyin for a sentence of characters from the set."""
        return " ".join(self.syllable[c] for c in text)


def build_lexicon(num_chars: int = 400, dict_path: str | Path | None = None) -> Lexicon:
    """One character per toned syllable, the ``num_chars`` most frequent such characters.

    Character frequency = summed jieba frequency of the words containing it, so the set is
    made of the characters that real words use most.
    """
    from pypinyin import Style, pinyin

    path = Path(dict_path) if dict_path else jieba_dict_path()
    entries: list[tuple[str, int, str]] = []
    char_freq: Counter[str] = Counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2 or not _CJK_WORD.match(parts[0]):
                continue
            word, freq = parts[0], int(parts[1])
            tag = parts[2] if len(parts) > 2 else ""
            entries.append((word, freq, tag))
            for ch in word:
                char_freq[ch] += freq
    # Sort ties by the character itself so the set never depends on dict order quirks.
    ranked = sorted(char_freq, key=lambda c: (-char_freq[c], c))
    syllable: dict[str, str] = {}
    taken: set[str] = set()
    for ch in ranked:
        if len(syllable) >= num_chars:
            break
        readings = pinyin(ch, style=Style.TONE3, heteronym=True, neutral_tone_with_five=True)[0]
        if len(readings) != 1 or not readings[0][-1].isdigit():
            continue  # polyphonic, or no pinyin known: its sound would be ambiguous
        syl = readings[0]
        if syl in taken:
            continue  # a more frequent homophone is already in the set
        taken.add(syl)
        syllable[ch] = syl
    if len(syllable) < num_chars:
        raise ValueError(f"only {len(syllable)} homophone-free characters available")
    words = [
        (w, f, t)
        for w, f, t in entries
        if len(w) <= 4 and w not in BLOCKED_WORDS and all(c in syllable for c in w)
    ]
    return Lexicon(syllable=syllable, words=words)


class WordSampler:
    """Draws words with probability proportional to frequency**alpha (alpha < 1 flattens it,
    so the text is not dominated by a few function words)."""

    def __init__(self, words: list[tuple[str, int, str]], alpha: float = 0.5) -> None:
        if not words:
            raise ValueError("empty word list")
        self.words = [w for w, _, _ in words]
        weights = [max(f, 1) ** alpha for _, f, _ in words]
        self.cum = list(itertools.accumulate(weights))

    def draw(self, rng: random.Random) -> str:
        x = rng.random() * self.cum[-1]
        return self.words[min(bisect.bisect_right(self.cum, x), len(self.words) - 1)]


@dataclass(frozen=True)
class TextDomain:
    """How one domain's sentences are made."""

    name: str
    domain_word_share: float  # probability that a word is drawn from the domain vocabulary
    min_chars: int = 6
    max_chars: int = 14


def make_samplers(lex: Lexicon, alpha: float = 0.5) -> tuple[WordSampler, WordSampler]:
    """(general-vocabulary sampler, domain-vocabulary sampler)."""
    general = [w for w in lex.words if w[2] not in DOMAIN_TAGS]
    domain = [w for w in lex.words if w[2] in DOMAIN_TAGS and len(w[0]) >= 2]
    return WordSampler(general, alpha), WordSampler(domain, alpha)


def make_sentence(
    rng: random.Random, dom: TextDomain, general: WordSampler, domain: WordSampler
) -> str:
    """Concatenate words until the sentence length falls in [min_chars, max_chars]."""
    target = rng.randint(dom.min_chars, dom.max_chars)
    out = ""
    while len(out) < target:
        sampler = domain if rng.random() < dom.domain_word_share else general
        word = sampler.draw(rng)
        if len(out) + len(word) > dom.max_chars:
            if len(out) >= dom.min_chars:
                break
            continue
        out += word
    return out


def make_sentences(
    n: int,
    rng: random.Random,
    dom: TextDomain,
    general: WordSampler,
    domain: WordSampler,
    used: set[str],
) -> list[str]:
    """``n`` sentences, none of them in ``used`` (so test text never repeats train text)."""
    out: list[str] = []
    tries = 0
    limit = max(1000, 50 * n)
    while len(out) < n:
        tries += 1
        if tries > limit:
            raise RuntimeError(f"could not make {n} distinct sentences for {dom.name}")
        s = make_sentence(rng, dom, general, domain)
        if s in used:
            continue
        used.add(s)
        out.append(s)
    return out
