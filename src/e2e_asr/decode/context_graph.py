"""Hotword biasing: a context graph over token ids (an Aho-Corasick automaton).

Each phrase is a path of tokens from the root; every token of a phrase earns the phrase's
bonus (``score`` per token) as soon as a hypothesis emits it in sequence. When the partial
match breaks (the next token does not continue any phrase), the bonus earned by the broken
part is withdrawn, and the automaton falls back along its failure link to the longest suffix
that is still the beginning of some phrase (whose tokens are credited again). Once a phrase is
complete, its bonus is kept: it is *committed* and no later token can take it back. At the end
of an utterance, the bonus of an unfinished match is withdrawn (``finalize``).

A state is a pair ``(node, committed)``: the automaton node of the longest open match, and how
much of that node's accumulated bonus is already committed (a completed phrase that is also
the beginning of a longer one). The searches keep one state per hypothesis prefix; since the
state is a function of the prefix's tokens, merged prefixes always agree on it.

Hotword files: one phrase per line, optionally followed by ``:score`` (the per-token bonus of
that phrase; default: the global hotword score), e.g. ``北京大学 :3.0``. Empty lines and lines
starting with ``#`` are skipped. Phrases are normalised like transcripts and tokenised with the
model's units; a phrase with characters the model does not know is skipped with a message
naming the file and line.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from e2e_asr.data.text import normalize
from e2e_asr.data.units import Tokenizer

ROOT = 0


class HotwordError(ValueError):
    """A hotword file cannot be used; the message names the file and line."""


@dataclass
class _Node:
    token: int
    depth: int
    score: float  # bonus accumulated from the root to here (sum of per-token bonuses)
    end: bool = False  # a phrase ends here
    fail: int = ROOT
    children: dict[int, int] = field(default_factory=dict)


State = tuple[int, float]  # (node id, committed part of that node's score)


class ContextGraph:
    """Aho-Corasick automaton of hotword phrases (token id sequences) with per-token bonuses."""

    def __init__(self, phrases: Iterable[tuple[Sequence[int], float]]) -> None:
        self.nodes: list[_Node] = [_Node(token=-1, depth=0, score=0.0)]
        self.num_phrases = 0
        for tokens, score in phrases:
            self._add(list(tokens), float(score))
        self._link()
        self._goto_cache: dict[tuple[int, int], int] = {}

    def _add(self, tokens: list[int], score: float) -> None:
        if not tokens:
            return
        node = ROOT
        for tok in tokens:
            child = self.nodes[node].children.get(tok)
            if child is None:
                parent = self.nodes[node]
                child = len(self.nodes)
                self.nodes.append(_Node(tok, parent.depth + 1, parent.score + score))
                parent.children[tok] = child
            else:
                # a token shared by two phrases earns the larger of their bonuses
                parent = self.nodes[node]
                self.nodes[child].score = max(self.nodes[child].score, parent.score + score)
            node = child
        if not self.nodes[node].end:
            self.num_phrases += 1
        self.nodes[node].end = True

    def _link(self) -> None:
        """Failure links, breadth first: the longest proper suffix that is a phrase prefix."""
        queue = deque(self.nodes[ROOT].children.values())
        while queue:
            n = queue.popleft()
            for tok, child in self.nodes[n].children.items():
                f = self.nodes[n].fail
                while f != ROOT and tok not in self.nodes[f].children:
                    f = self.nodes[f].fail
                nxt = self.nodes[f].children.get(tok, ROOT)
                self.nodes[child].fail = nxt if nxt != child else ROOT
                queue.append(child)

    def __len__(self) -> int:
        return self.num_phrases

    @property
    def start(self) -> State:
        return (ROOT, 0.0)

    def _goto(self, node: int, tok: int) -> int:
        key = (node, tok)
        hit = self._goto_cache.get(key)
        if hit is not None:
            return hit
        n = node
        while True:
            child = self.nodes[n].children.get(tok)
            if child is not None:
                out = child
                break
            if n == ROOT:
                out = ROOT
                break
            n = self.nodes[n].fail
        self._goto_cache[key] = out
        return out

    def step(self, state: State, tok: int) -> tuple[float, State]:
        """(bonus change, next state) when a hypothesis in ``state`` emits ``tok``.

        Continuing a match earns the token's bonus; breaking it withdraws the open
        (uncommitted) bonus and credits the fallback suffix; completing a phrase commits it.
        """
        node, committed = state
        nxt = self._goto(node, tok)
        cur = self.nodes[node]
        new = self.nodes[nxt]
        if cur.children.get(tok) == nxt:
            delta = new.score - cur.score  # the match goes on: this token's bonus
        else:
            # the match broke: keep what was committed, drop the rest, credit the suffix
            delta = committed + new.score - cur.score
            committed = 0.0
        if new.end:
            if not new.children:
                return delta, (ROOT, 0.0)  # complete: the bonus is kept for good
            committed = new.score  # complete, but a longer phrase may still follow
        return delta, (nxt, committed)

    def finalize(self, state: State) -> float:
        """The bonus change at the end of the utterance: an unfinished match is withdrawn."""
        node, committed = state
        return committed - self.nodes[node].score

    def score(self, tokens: Iterable[int]) -> float:
        """Total bonus of a complete token sequence (steps plus finalize)."""
        state, total = self.start, 0.0
        for tok in tokens:
            d, state = self.step(state, tok)
            total += d
        return total + self.finalize(state)


def parse_hotword_line(line: str, where: str) -> tuple[str, float | None] | None:
    """``phrase [:score]`` -> (phrase, score or None); None for blank/comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    score: float | None = None
    head, sep, tail = text.rpartition(" :") if " :" in text else ("", "", "")
    if not sep and "\t:" in text:
        head, sep, tail = text.rpartition("\t:")
    if sep:
        try:
            score = float(tail.strip())
        except ValueError:
            raise HotwordError(f"{where}: score {tail.strip()!r} is not a number") from None
        text = head.strip()
        if score <= 0:
            raise HotwordError(f"{where}: score {score} must be > 0")
    if not text:
        raise HotwordError(f"{where}: a score without a phrase")
    return text, score


def read_phrases(path: str | os.PathLike) -> list[tuple[str, float | None, str]]:
    """(normalised phrase, score or None, "file:line") for each phrase line of a hotword file."""
    out = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise HotwordError(f"{path}: cannot read the hotword file: {e.strerror}") from None
    with fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                where = f"{path}:{lineno}"
                parsed = parse_hotword_line(raw, where)
                if parsed is not None:
                    out.append((normalize(parsed[0]), parsed[1], where))
        except UnicodeDecodeError as e:
            raise HotwordError(f"{path}: not UTF-8 text ({e.reason})") from None
    return out


@dataclass
class PhraseRecall:
    """How many occurrences of the phrases in the references the hypotheses have."""

    phrases: int = 0  # phrases in the list
    occurrences: int = 0  # occurrences in the references
    recalled: int = 0  # of those, found in the hypothesis of the same utterance
    false_alarms: int = 0  # occurrences in hypotheses beyond those in the reference

    @property
    def recall(self) -> float:
        return 100.0 * self.recalled / self.occurrences if self.occurrences else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "phrases": self.phrases,
            "occurrences": self.occurrences,
            "recalled": self.recalled,
            "recall": round(self.recall, 2),
            "false_alarms": self.false_alarms,
        }


def phrase_recall(
    refs: dict[str, str], hyps: dict[str, str], phrases: Iterable[str]
) -> PhraseRecall:
    """Per utterance and phrase, min(occurrences in reference, in hypothesis) are recalled
    (spaces ignored; a missing hypothesis is empty)."""
    plist = sorted({p.replace(" ", "") for p in phrases if p.strip()})
    r = PhraseRecall(phrases=len(plist))
    for key, ref in refs.items():
        ref_s = ref.replace(" ", "")
        hyp_s = hyps.get(key, "").replace(" ", "")
        for p in plist:
            n_ref = ref_s.count(p)
            n_hyp = hyp_s.count(p)
            r.occurrences += n_ref
            r.recalled += min(n_ref, n_hyp)
            r.false_alarms += max(0, n_hyp - n_ref)
    return r


def load_hotwords(
    path: str | os.PathLike,
    tokenizer: Tokenizer,
    default_score: float,
    warn: Callable[[str], None] | None = None,
) -> ContextGraph:
    """Read a hotword file into a context graph over the model's units.

    Phrases whose characters the model does not know are skipped with a message (they could
    never be emitted); the number of phrases used and skipped is reported through ``warn``.
    """
    if default_score <= 0:
        raise HotwordError(f"hotword score {default_score} must be > 0")
    phrases: list[tuple[list[int], float]] = []
    skipped = 0
    for norm, score, where in read_phrases(path):
        oov = tokenizer.oov(norm)
        if oov or not norm.strip():
            skipped += 1
            if warn is not None:
                what = "".join(sorted(set(oov))) if oov else "nothing left after normalising"
                warn(f"{where}: phrase {norm!r} skipped: {what} not in the model's units")
            continue
        phrases.append((tokenizer.encode(norm), default_score if score is None else score))
    graph = ContextGraph(phrases)
    if warn is not None:
        warn(f"{path}: {len(graph)} hotword phrases" + (f", {skipped} skipped" if skipped else ""))
    if not len(graph):
        raise HotwordError(f"{path}: no usable hotword phrase")
    return graph
