#!/usr/bin/env python3
"""Accuracy of token timestamps and confidences (transcribe.py --output-format ctm|json).

  benchmarks/bench_timestamps.py --model-dir EXP/export [--backend onnx] [--utts 40]
                                 [--mode attention_rescoring] [--seed 0]

Test audio with known word boundaries: words of the demo lexicon (local/demo/demo_text.py,
restricted to the model's units) are synthesised one by one with espeak-ng (the
cmn-latn-pinyin voice, as the demo corpus), their leading and trailing silence trimmed, and
concatenated with random pauses (0.1-0.4 s) and a little background noise; each word's start
and end in the concatenation are therefore known to the sample.

The utterances are decoded with the model's recognizer and its per-token times (CTC forced
alignment of the final hypothesis). For every reference word whose first (last) character
the hypothesis got right, the token's start (end) is compared with the word's true start
(end). Prints the median and 90th percentile absolute boundary errors, and the mean
confidence of right tokens (alignment op C) and wrong ones (substitutions and insertions).
The issue's targets: median boundary error <= 40 ms, confidence lower on wrong tokens.
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "local" / "demo"))

from demo_text import build_lexicon  # noqa: E402

SR = 16000
VOICES = ("m1", "f2", "m3", "f3")


def speak(pinyin: str, voice: str, speed: int) -> np.ndarray:
    out = subprocess.run(
        ["espeak-ng", "-v", f"cmn-latn-pinyin+{voice}", "-s", str(speed), "--stdout", pinyin],
        capture_output=True,
        check=True,
    ).stdout
    audio, rate = sf.read(io.BytesIO(out), dtype="float32")
    return resample_poly(audio, SR, rate).astype(np.float32)


def trim(x: np.ndarray, db: float = -30.0) -> np.ndarray:
    """Cut leading/trailing 5 ms frames whose RMS is more than ``db`` below the loudest."""
    n = len(x) // 80
    rms = np.sqrt(np.mean(x[: n * 80].reshape(n, 80) ** 2, axis=1) + 1e-12)
    keep = np.flatnonzero(20 * np.log10(rms / rms.max()) > db)
    return x[keep[0] * 80 : (keep[-1] + 1) * 80]


def make_utterance(words, to_pinyin, rng: random.Random, nrng: np.random.Generator):
    """Audio and [(word, start s, end s)] of the words said one by one with pauses."""
    voice = rng.choice(VOICES)
    speed = rng.randint(150, 185)
    parts = [np.zeros(int(rng.uniform(0.15, 0.3) * SR), np.float32)]
    spans = []
    pos = len(parts[0])
    for i, w in enumerate(words):
        a = trim(speak(to_pinyin(w), voice, speed))
        a = 0.5 * a / (np.abs(a).max() + 1e-9)
        spans.append((w, pos / SR, (pos + len(a)) / SR))
        parts.append(a)
        pos += len(a)
        gap = np.zeros(int(rng.uniform(0.1, 0.4) * SR if i < len(words) - 1 else 0.25 * SR))
        parts.append(gap.astype(np.float32))
        pos += len(gap)
    x = np.concatenate(parts)
    x = x + nrng.standard_normal(len(x)).astype(np.float32) * 0.001
    return x, spans


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="export directory (stage 5)")
    src.add_argument(
        "--digits-model",
        metavar="DIR",
        help="train and export the tests' tiny spoken-digits model in DIR and use it "
        "(tests/trained_fixtures.py; its words are single digits)",
    )
    p.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    p.add_argument("--mode", default=None, help="decoding mode (default: the package's)")
    p.add_argument("--utts", type=int, default=40)
    p.add_argument("--words", type=int, default=4, help="words per utterance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)

    from e2e_asr.decode.recognizer import Recognizer
    from e2e_asr.decode.scoring import COR, align

    model_dir = a.model_dir
    if a.digits_model:
        sys.path.insert(0, str(ROOT / "tests"))
        from trained_fixtures import digits_model

        model_dir = digits_model(Path(a.digits_model)).export_dir
    rec = Recognizer.from_model_dir(
        model_dir, a.backend, num_threads=a.threads, **({"mode": a.mode} if a.mode else {})
    )
    units = set(rec.tokenizer.units)
    lex = build_lexicon()
    words = [w for w, _, _ in lex.words if 2 <= len(w) <= 3 and all(c in units for c in w)]
    to_pinyin = lex.to_pinyin
    if len(words) < 20:  # a model with few units (the digits): single characters as words
        from pypinyin import Style, pinyin

        def to_pinyin(w: str) -> str:
            return " ".join(r[0] for r in pinyin(w, style=Style.TONE3, neutral_tone_with_five=True))

        words = [u for u in sorted(units) if len(u) == 1 and "\u4e00" <= u <= "\u9fff"]
    if not words:
        print("bench_timestamps: no word is covered by the model's units", file=sys.stderr)
        return 1
    rng = random.Random(a.seed)
    nrng = np.random.default_rng(a.seed)
    utts = [
        make_utterance([rng.choice(words) for _ in range(a.words)], to_pinyin, rng, nrng)
        for _ in range(a.utts)
    ]
    feats = [(f"u{i}", rec.features(x)) for i, (x, _) in enumerate(utts)]
    decoded = rec.decode_with_times(feats)

    start_err, end_err, right, wrong = [], [], [], []
    for (_, spans), (_, times) in zip(utts, decoded, strict=True):
        ref_chars, char_word = [], []  # reference characters, (word index, first?, last?)
        for wi, (w, _, _) in enumerate(spans):
            for ci, c in enumerate(w):
                ref_chars.append(c)
                char_word.append((wi, ci == 0, ci == len(w) - 1))
        hyp_chars = [rec.tokenizer.units[t.token] for t in times]
        ri = hi = 0
        for r, h, op in align(ref_chars, hyp_chars).pairs:
            if h is not None:
                (right if op == COR else wrong).append(times[hi].confidence)
            if op == COR:
                wi, first, last = char_word[ri]
                t = times[hi]
                if first:
                    start_err.append(t.start - spans[wi][1])
                if last:
                    end_err.append(t.start + t.duration - spans[wi][2])
            ri += r is not None
            hi += h is not None
    signed_start, signed_end = np.median(start_err or [np.nan]), np.median(end_err or [np.nan])
    start_err, end_err = [abs(e) for e in start_err], [abs(e) for e in end_err]
    both = start_err + end_err
    ms = lambda v, q: 1000 * float(np.quantile(v, q)) if v else float("nan")  # noqa: E731
    hyps = sum(len(ids) for ids, _ in decoded)
    refs = sum(len(w) for _, spans in utts for w, _, _ in spans)
    print(f"{a.utts} utterances x {a.words} words ({refs} reference chars, {hyps} hyp tokens)")
    print(
        f"token error: {len(wrong)} wrong of {len(right) + len(wrong)} hypothesis tokens "
        f"({100 * len(wrong) / max(1, len(right) + len(wrong)):.1f}%)"
    )
    print(
        f"word start error: median {ms(start_err, 0.5):.0f} ms, 90% {ms(start_err, 0.9):.0f} ms "
        f"({len(start_err)} boundaries)"
    )
    print(
        f"word end error:   median {ms(end_err, 0.5):.0f} ms, 90% {ms(end_err, 0.9):.0f} ms "
        f"({len(end_err)} boundaries)"
    )
    print(f"all boundaries:   median {ms(both, 0.5):.0f} ms, 90% {ms(both, 0.9):.0f} ms")
    print(
        f"signed median (hyp - true): start {1000 * signed_start:+.0f} ms, "
        f"end {1000 * signed_end:+.0f} ms"
    )
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    print(
        f"confidence: right tokens mean {mean(right):.3f} (n={len(right)}), "
        f"wrong tokens mean {mean(wrong):.3f} (n={len(wrong)})"
    )
    if right and wrong:
        # probability that a random wrong token has a lower confidence than a random right one
        r_arr, w_arr = np.array(right), np.array(wrong)
        auc = float((w_arr[:, None] < r_arr[None, :]).mean())
        print(f"P(conf wrong < conf right) = {auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
