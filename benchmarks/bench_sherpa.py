#!/usr/bin/env python3
"""sherpa-onnx vs our ONNX Runtime CTC greedy path on a test set (the export's sherpa-onnx
model, fp32 and int8).

  benchmarks/bench_sherpa.py --model-dir EXP/export \
      (--data-dir DATA | --wav-dir DIR --transcript FILE) [--threads 1]

DATA is a Kaldi data dir (wav.scp + text); DIR/FILE an AISHELL-style pair (`<key> <text>`
lines, audio DIR/<key>.wav), e.g. the demo corpus's target/test. For each precision it prints
the share of utterances with identical hypotheses, and the CER of both decoders against the
references; also with sherpa-onnx's default fbank options (what a user gets from
``OfflineRecognizer.from_wenet_ctc`` alone), to show what the feature settings are worth; and
our own decoder on the audio scaled by 1.001 (an imperceptible change), to show how much any
tiny input difference moves each precision's hypotheses.
The issue's target: identical on >= 99% of utterances, CER within 0.1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)


def load_set(a) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """([(key, wav)], {key: reference text})"""
    from e2e_asr.data.datadir import iter_kv, read_data_dir
    from e2e_asr.data.text import normalize

    if a.data_dir:
        utts = read_data_dir(a.data_dir)
        return [(u.utt, u.wav) for u in utts], {u.utt: u.text for u in utts}
    refs = {k: normalize(v) for k, v in iter_kv(a.transcript)}
    return [(k, str(Path(a.wav_dir) / f"{k}.wav")) for k in refs], refs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--wav-dir")
    p.add_argument("--transcript")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if not a.data_dir and not (a.wav_dir and a.transcript):
        p.error("give --data-dir or --wav-dir and --transcript")

    import numpy as np
    import sherpa_onnx

    from e2e_asr.data.audio import load_audio
    from e2e_asr.decode.recognizer import Recognizer
    from e2e_asr.decode.scoring import score_corpus
    from e2e_asr.export.sherpa import SHERPA_DIR, sherpa_recognizer, sherpa_transcribe

    items, refs = load_set(a)
    audio = [(k, load_audio(w)) for k, w in items]
    d = Path(a.model_dir) / SHERPA_DIR
    print(f"{len(audio)} utterances, sherpa-onnx {sherpa_onnx.__version__}")
    for quantized in (False, True):
        name = "int8" if quantized else "fp32"
        recognizer = Recognizer.from_model_dir(
            a.model_dir, "onnx", quantized, a.threads, mode="ctc_greedy"
        )
        ours = dict(recognizer.transcribe(audio))
        # the same runtime on imperceptibly changed input: how much agreement can be expected
        nudged = dict(recognizer.transcribe([(k, x * np.float32(1.001)) for k, x in audio]))
        sherpa = dict(
            sherpa_transcribe(sherpa_recognizer(a.model_dir, quantized, a.threads), audio)
        )
        model = d / ("model.int8.onnx" if quantized else "model.onnx")
        default = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(
            model=str(model),
            tokens=str(d / "tokens.txt"),
            num_threads=a.threads,
            feature_dim=sherpa_recognizer_dim(d),
        )
        plain = dict(sherpa_transcribe(default, audio))
        cer = {n: score_corpus(refs, h).cer.error_rate for n, h in
               (("ours", ours), ("sherpa", sherpa), ("default", plain))}  # fmt: skip
        same = sum(ours[k] == sherpa[k] for k in refs) / len(refs)
        same_default = sum(ours[k] == plain[k] for k in refs) / len(refs)
        same_nudged = sum(ours[k] == nudged[k] for k in refs) / len(refs)
        print(
            f"{name}: identical hypotheses {100 * same:.1f}%, CER ours {cer['ours']:.2f} "
            f"sherpa-onnx {cer['sherpa']:.2f} (diff {abs(cer['ours'] - cer['sherpa']):.2f}); "
            f"sherpa-onnx with its default fbank options: identical {100 * same_default:.1f}%, "
            f"CER {cer['default']:.2f}; ours on the audio x 1.001: identical "
            f"{100 * same_nudged:.1f}%"
        )
    return 0


def sherpa_recognizer_dim(d: Path) -> int:
    import json

    from e2e_asr.export.sherpa import FEATURE_OPTIONS_FILE

    return int(json.loads((d / FEATURE_OPTIONS_FILE).read_text())["feature_dim"])


if __name__ == "__main__":
    sys.exit(main())
