"""The demo corpus generator at toy scale: layout, audio format, text, determinism, domains."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

DEMO_DIR = Path(__file__).resolve().parents[1] / "local" / "demo"
sys.path.insert(0, str(DEMO_DIR))

import demo_text  # noqa: E402
import make_corpus  # noqa: E402

TOY = [
    "--num-source-train", "4", "--num-source-dev", "2", "--num-source-test", "2",
    "--num-target-train", "3", "--num-target-dev", "2", "--num-target-test", "3",
]  # fmt: skip


def _make(out: Path, seed: int = 0, nj: int = 2) -> None:
    argv = ["--out-dir", str(out), "--seed", str(seed), "--nj", str(nj), *TOY]
    assert make_corpus.main(argv) == 0


def _read_transcript(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, text = line.split(" ", 1)
        out[key] = text
    return out


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".done":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    _make(out)
    return out


@pytest.fixture(scope="module")
def lexicon() -> demo_text.Lexicon:
    return demo_text.build_lexicon(400)


def test_lexicon_is_homophone_free(lexicon: demo_text.Lexicon) -> None:
    syllables = list(lexicon.syllable.values())
    assert len(syllables) == 400
    assert len(set(syllables)) == 400, "two characters share a toned syllable"
    assert all(s[-1] in "12345" for s in syllables)
    assert all(set(w) <= set(lexicon.syllable) for w, _, _ in lexicon.words)
    general, domain = demo_text.make_samplers(lexicon)
    assert len(general.words) > 1000 and len(domain.words) > 100
    assert not set(general.words) & set(domain.words)


def test_layout_format_and_charset(corpus: Path) -> None:
    charset = set((corpus / "charset.txt").read_text(encoding="utf-8").split())
    assert len(charset) == 400
    sizes = {"source": (4, 2, 2), "target": (3, 2, 3)}
    seen_texts: list[str] = []
    for dom, counts in sizes.items():
        for split, n in zip(make_corpus.SPLITS, counts, strict=True):
            d = corpus / dom / split
            trans = _read_transcript(d / "transcript.txt")
            wavs = sorted(p.stem for p in (d / "wav").glob("*.wav"))
            assert sorted(trans) == wavs and len(wavs) == n
            for key, text in trans.items():
                assert set(text) <= charset and 6 <= len(text) <= 14, text
                info = sf.info(str(d / "wav" / f"{key}.wav"))
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                assert 0.5 < info.duration < 10.0
                audio, _ = sf.read(str(d / "wav" / f"{key}.wav"))
                assert np.max(np.abs(audio)) > 0.1  # not silence
                # no digital silence: the longest run of exact zeros is a few samples at most
                zero = np.concatenate([[0], (audio == 0).astype(np.int8), [0]])
                edges = np.flatnonzero(np.diff(zero))
                assert np.max(edges[1::2] - edges[::2], initial=0) < 20
            seen_texts.extend(trans.values())
    assert len(set(seen_texts)) == len(seen_texts), "a sentence repeats across splits"
    assert (corpus / ".done").exists()


def test_deterministic_and_idempotent(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "corpus"
    _make(again, nj=1)  # another process count must not change a single byte
    assert _digest(again) == _digest(corpus)
    wav = next((again / "source" / "train" / "wav").glob("*.wav"))
    mtime = wav.stat().st_mtime_ns
    _make(again)  # finished corpus: skipped, nothing rewritten
    assert wav.stat().st_mtime_ns == mtime
    other = tmp_path / "seed1"
    _make(other, seed=1)
    assert _digest(other) != _digest(corpus)


def test_target_differs_from_source(corpus: Path) -> None:
    src_specs = make_corpus.SOURCE
    tgt_specs = make_corpus.TARGET
    assert not set(src_specs.variants) & set(tgt_specs.variants)
    assert tgt_specs.speed[0] > src_specs.speed[1]

    def voices(dom: str) -> set[str]:
        keys = _read_transcript(corpus / dom / "train" / "transcript.txt")
        return {k.split("_")[2] for k in keys}

    assert voices("source") <= set(src_specs.variants)
    assert voices("target") <= set(tgt_specs.variants)

    # Same text, each domain's rendering: the target is faster, so shorter.
    lex = demo_text.build_lexicon(400)
    text = "".join(lex.charset[:8])
    rng = random.Random(0)
    durations = {}
    for dom in (src_specs, tgt_specs):
        spec = make_corpus.UttSpec(
            key="x", text=text, pinyin=lex.to_pinyin(text), variant=dom.variants[0],
            speed=dom.speed[0], pitch=50, snr_db=None, telephone=False, gain=0.5,
            noise_seed=rng.getrandbits(32), path="",
        )  # fmt: skip
        durations[dom.name] = len(make_corpus.synthesize(spec.pinyin, spec.variant, spec.speed, 50))
    assert durations["target"] < 0.95 * durations["source"]


def test_target_text_uses_domain_words(lexicon: demo_text.Lexicon) -> None:
    general, domain = demo_text.make_samplers(lexicon)
    domain_words = set(domain.words)
    used: set[str] = set()

    def share(dom: demo_text.TextDomain) -> float:
        texts = demo_text.make_sentences(200, random.Random(3), dom, general, domain, used)
        hits = sum(any(w in t for w in domain_words if len(w) >= 3) for t in texts)
        return hits / len(texts)

    # Source text never draws a domain word; a 3+-character place name may still appear by
    # chance from general words, so only a small share is allowed.
    assert share(make_corpus.SOURCE.text) < 0.15
    assert share(make_corpus.TARGET.text) > 0.4


def test_degrade_adds_noise_at_snr() -> None:
    t = np.arange(16000) / 16000
    clean = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    spec = make_corpus.UttSpec(
        key="x", text="", pinyin="", variant="f5", speed=200, pitch=50, snr_db=10.0,
        telephone=False, gain=0.5, noise_seed=7, path="",
    )  # fmt: skip
    noisy = make_corpus.degrade(clean, spec)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 0.5
