#!/usr/bin/env python3
"""Make the embedded demo's synthetic Mandarin corpus with espeak-ng: a source and a target domain.

Output (exactly what a user hands to stage 0, so the demo fine-tune goes through the same path):

    OUT_DIR/{source,target}/{train,dev,test}/wav/<key>.wav   16 kHz mono 16-bit
    OUT_DIR/{source,target}/{train,dev,test}/transcript.txt  AISHELL "<key> <text>" lines
    OUT_DIR/charset.txt                                      the character set, one a line
    OUT_DIR/.done                                            written last; holds the parameters

Domains (see ``SOURCE`` / ``TARGET`` below):
- source: several espeak-ng voice variants at normal speed, clean, everyday vocabulary;
- target: voice variants never used in the source, faster speech, background noise at 8-15 dB
  SNR, half of it telephone band (300-3400 Hz), and place/organisation names that never occur
  in the source text.

espeak-ng reads Chinese characters badly (many come out as English letters), so we give it
tonal pinyin through the ``cmn-latn-pinyin`` voice; transcripts stay in characters. Every
utterance's text, voice, speed, pitch and noise come from a random generator seeded with
(seed, domain, split, index), so the corpus is the same for the same seed whatever ``--nj``.
A corpus whose ``.done`` holds the same parameters is left alone (re-running is free); with
other parameters it is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import numpy as np
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfilt

from e2e_asr.data.io import atomic_path, atomic_write_lines

RUNNER = Path(__file__).resolve().parents[2] / "utils" / "run.py"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_text import (  # noqa: E402  (local module next to this script)
    Lexicon,
    TextDomain,
    build_lexicon,
    make_samplers,
    make_sentences,
)

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
ESPEAK_VOICE = "cmn-latn-pinyin"
SPLITS = ("train", "dev", "test")
FORMAT_VERSION = 1  # bump when the audio/text recipe changes, so old corpora get rebuilt


@dataclass(frozen=True)
class Domain:
    """Acoustic and textual conditions of one domain."""

    name: str
    key_prefix: str
    variants: tuple[str, ...]  # espeak-ng voice variants (``cmn-latn-pinyin+<variant>``)
    speed: tuple[int, int]  # words per minute, inclusive range (espeak default 175)
    pitch: tuple[int, int]  # espeak -p, 0..99 (default 50)
    snr_db: tuple[float, float] | None  # background noise; None = clean
    telephone_prob: float  # probability of a 300-3400 Hz telephone band
    text: TextDomain


SOURCE = Domain(
    name="source",
    key_prefix="src",
    variants=("m1", "m3", "f2", "f3", "m5", "f4"),
    speed=(150, 180),
    pitch=(35, 65),
    snr_db=None,
    telephone_prob=0.0,
    text=TextDomain("source", domain_word_share=0.0),
)
TARGET = Domain(
    name="target",
    key_prefix="tgt",
    variants=("klatt", "f5", "klatt3"),
    speed=(200, 235),
    pitch=(30, 70),
    snr_db=(8.0, 15.0),
    telephone_prob=0.5,
    text=TextDomain("target", domain_word_share=0.5),
)
DOMAINS = (SOURCE, TARGET)


@dataclass(frozen=True)
class UttSpec:
    """Everything needed to render one utterance; built in the parent, rendered in a worker."""

    key: str
    text: str
    pinyin: str
    variant: str
    speed: int
    pitch: int
    snr_db: float | None
    telephone: bool
    gain: float
    noise_seed: int
    path: str


def _rng(seed: int, *parts: object) -> random.Random:
    """A generator for one (seed, parts...) cell, independent of the order work is done in."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def plan_split(
    dom: Domain, split: str, n: int, seed: int, lex: Lexicon, used: set[str], out_dir: Path
) -> list[UttSpec]:
    """Texts and rendering parameters for one domain/split (deterministic from ``seed``)."""
    general, domain_words = make_samplers(lex)
    text_rng = _rng(seed, dom.name, split, "text")
    texts = make_sentences(n, text_rng, dom.text, general, domain_words, used)
    specs = []
    for i, text in enumerate(texts):
        r = _rng(seed, dom.name, split, i)
        variant = dom.variants[i % len(dom.variants)]  # balanced voices in every split
        key = f"{dom.key_prefix}_{split}_{variant}_{i:06d}"
        specs.append(
            UttSpec(
                key=key,
                text=text,
                pinyin=lex.to_pinyin(text),
                variant=variant,
                speed=r.randint(*dom.speed),
                pitch=r.randint(*dom.pitch),
                snr_db=r.uniform(*dom.snr_db) if dom.snr_db else None,
                telephone=r.random() < dom.telephone_prob,
                gain=r.uniform(0.3, 0.9),
                noise_seed=r.getrandbits(32),
                path=str(out_dir / dom.name / split / "wav" / f"{key}.wav"),
            )
        )
    return specs


def synthesize(pinyin: str, variant: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng audio at 16 kHz, float32 in [-1, 1]."""
    cmd = [
        "espeak-ng",
        "-v",
        f"{ESPEAK_VOICE}+{variant}",
        "-s",
        str(speed),
        "-p",
        str(pitch),
        "--stdout",
        pinyin,
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {proc.stderr.decode().strip()}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng gave {rate} Hz audio, expected {ESPEAK_RATE}")
    # 22050 -> 16000 = 320/441, a polyphase filter is exact enough and fast.
    return resample_poly(audio, 320, 441).astype(np.float32)


def degrade(audio: np.ndarray, spec: UttSpec) -> np.ndarray:
    """Target-domain channel: telephone band and/or coloured background noise."""
    x = audio.astype(np.float64)
    if spec.telephone:
        sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        x = sosfilt(sos, x)
    if spec.snr_db is not None:
        rng = np.random.default_rng(spec.noise_seed)
        white = rng.standard_normal(len(x))
        # Half white, half low-passed ("brown-ish") noise: closer to room/street hum than hiss.
        brown = np.cumsum(rng.standard_normal(len(x)))
        # Subtract a 25 ms moving average: removes the random walk's drift (a DC wander).
        brown -= np.convolve(brown, np.ones(401) / 401, mode="same")
        brown /= np.std(brown) + 1e-9
        noise = 0.5 * white + 0.5 * brown
        p_sig = float(np.mean(x[np.abs(x) > 1e-4] ** 2)) if np.any(np.abs(x) > 1e-4) else 1e-8
        p_noise = float(np.mean(noise**2)) + 1e-12
        x = x + noise * np.sqrt(p_sig / p_noise / 10 ** (spec.snr_db / 10))
    return x.astype(np.float32)


def render(spec: UttSpec) -> str:
    """Synthesize, degrade, scale and write one wav file atomically; returns the key."""
    audio = synthesize(spec.pinyin, spec.variant, spec.speed, spec.pitch)
    audio = degrade(audio, spec)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = audio * (spec.gain / peak)
    # A recording's noise floor (about 1 LSB of 16-bit audio): espeak-ng writes digital silence,
    # runs of exact zeros that real recordings never have, and on which fbank implementations
    # differ (sherpa-onnx's from Kaldi's), and which a model trained with dither never sees.
    floor = np.random.default_rng([spec.noise_seed, 1]).standard_normal(len(audio))
    audio = audio + (floor / 32768.0).astype(np.float32)
    path = Path(spec.path)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
    return spec.key


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write_lines(path, lines)


def corpus_params(args: argparse.Namespace) -> dict:
    sizes = {
        f"{dom.name}_{split}": getattr(args, f"num_{dom.name}_{split}")
        for dom in DOMAINS
        for split in SPLITS
    }
    params = {
        "format_version": FORMAT_VERSION,
        "seed": args.seed,
        "num_chars": args.num_chars,
        "sizes": sizes,
        "domains": [asdict(d) for d in DOMAINS],
    }
    # Through JSON and back, so it compares equal to what .done holds (tuples become lists).
    return json.loads(json.dumps(params, sort_keys=True))


def make_corpus(args: argparse.Namespace) -> Path:
    out_dir = Path(args.out_dir)
    done = out_dir / ".done"
    params = corpus_params(args)
    if done.exists():
        try:
            old = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == params:
            print(f"[make_corpus] {out_dir}: already complete, skipping", flush=True)
            return out_dir
        print(f"[make_corpus] {out_dir}: made with other parameters, rebuilding", flush=True)
        done.unlink()
    t0 = time.time()
    lex = build_lexicon(args.num_chars)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_lines(out_dir / "charset.txt", lex.charset)
    used: set[str] = set()  # sentence texts never repeat across splits or domains
    all_specs: list[UttSpec] = []
    for dom in DOMAINS:
        for split in SPLITS:
            n = params["sizes"][f"{dom.name}_{split}"]
            split_dir = out_dir / dom.name / split
            if split_dir.exists():
                shutil.rmtree(split_dir)  # a partial or stale split: start it clean
            (split_dir / "wav").mkdir(parents=True)
            specs = plan_split(dom, split, n, args.seed, lex, used, out_dir)
            all_specs.extend(specs)
            print(
                f"[make_corpus] {dom.name}/{split}: {n} utterances, voices "
                f"{'/'.join(dom.variants)}, speed {dom.speed[0]}-{dom.speed[1]}, "
                + (f"noise {dom.snr_db[0]:g}-{dom.snr_db[1]:g} dB SNR" if dom.snr_db else "clean")
                + (f", telephone band p={dom.telephone_prob:g}" if dom.telephone_prob else ""),
                flush=True,
            )
    # Rendering fans out as nj jobs through the job runner ($train_cmd of cmd.sh: this
    # machine or a cluster), each rendering a contiguous slice of the plan.
    plan = out_dir / ".plan.jsonl"
    _write_lines(plan, [json.dumps(asdict(s), ensure_ascii=False) for s in all_specs])
    nj = max(1, min(args.nj, len(all_specs)))
    log_dir = out_dir / "log"
    cmd = shlex.split(args.cmd or f"{shlex.quote(sys.executable)} {shlex.quote(str(RUNNER))}")
    argv = [*cmd, f"JOB=1:{nj}", str(log_dir.resolve() / "render.JOB.log"), sys.executable,
            str(Path(__file__).resolve()), "--plan", str(plan.resolve()), "--nj", str(nj),
            "--render-job", "JOB"]  # fmt: skip
    if subprocess.run(argv, check=False).returncode != 0:
        raise SystemExit(f"[make_corpus] rendering jobs failed; see {log_dir}/render.*.log")
    plan.unlink()
    shutil.rmtree(log_dir)  # kept only when a job failed: the corpus itself is the output
    # Transcripts after the audio: a transcript.txt never names a wav that is not there.
    by_dir: dict[Path, list[str]] = {}
    for spec in all_specs:
        by_dir.setdefault(Path(spec.path).parent.parent, []).append(f"{spec.key} {spec.text}")
    for split_dir, lines in by_dir.items():
        _write_lines(split_dir / "transcript.txt", sorted(lines))
    _write_lines(done, [json.dumps(params, ensure_ascii=False, sort_keys=True)])
    print(
        f"[make_corpus] wrote {len(all_specs)} utterances to {out_dir} "
        f"in {time.time() - t0:.1f} s ({nj} jobs)",
        flush=True,
    )
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out-dir", default="exp/demo/corpus", help="corpus root")
    p.add_argument("--seed", type=int, default=0, help="everything derives from it")
    p.add_argument("--nj", type=int, default=2, help="synthesis jobs")
    p.add_argument("--cmd", help='job runner, e.g. "$train_cmd" of cmd.sh (default: utils/run.py)')
    p.add_argument("--plan", help=argparse.SUPPRESS)  # a rendering job's input
    p.add_argument("--render-job", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--num-chars", type=int, default=400, help="size of the character set")
    defaults = {
        ("source", "train"): 3000,
        ("source", "dev"): 150,
        ("source", "test"): 200,
        ("target", "train"): 500,
        ("target", "dev"): 100,
        ("target", "test"): 200,
    }
    for (dom, split), n in defaults.items():
        p.add_argument(f"--num-{dom}-{split}", type=int, default=n, help=f"{dom} {split} size")
    return p


def render_job(plan: Path, job: int, nj: int) -> int:
    """Render the ``job``-th (1-based) of ``nj`` contiguous slices of the plan."""
    with open(plan, encoding="utf-8") as fh:
        specs = [UttSpec(**json.loads(line)) for line in fh if line.strip()]
    lo, hi = (job - 1) * len(specs) // nj, job * len(specs) // nj
    for spec in specs[lo:hi]:
        render(spec)
    print(f"[make_corpus] job {job}: rendered {hi - lo} utterances", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render_job:
        return render_job(Path(args.plan), args.render_job, args.nj)
    for dom in DOMAINS:
        for split in SPLITS:
            if getattr(args, f"num_{dom.name}_{split}") < 1:
                raise SystemExit(f"--num-{dom.name}-{split} must be >= 1")
    if shutil.which("espeak-ng") is None:
        raise SystemExit(
            "espeak-ng not found: install it (Debian/Ubuntu: apt-get install espeak-ng), "
            "or run tools/setup.sh as root"
        )
    make_corpus(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
