#!/usr/bin/env python3
"""Transcribe audio with an exported model; prints Kaldi text (`<utt> <text>`) on stdout.

  transcribe.py --model-dir EXP_DIR/export --backend {torch,onnx} [--quantized] \
                (--wav-scp FILE | WAV...) [--mode ... --beam ... --ctc-weight ...]

One line per input, in input order; for WAV arguments the utterance id is the file name
without its extension. Decoding options come from the package's decode.yaml and can be
overridden here (e.g. --hotwords FILE --hotword-score 1.5). An input that cannot be read is
reported on stderr, printed with an empty text, and makes the exit status 1.

--output-format ctm prints Kaldi CTM lines, one per token:
  `<utt> 1 <start> <duration> <token> <confidence>` (seconds, confidence in [0, 1]);
--output-format json prints one JSON object per input:
  {"utt": ..., "text": ..., "tokens": [{"token", "start", "duration", "confidence"}, ...]}.
Times and confidences come from a CTC forced alignment of the final hypothesis.
"""

from __future__ import annotations

import argparse
import json
import sys

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.decode.config import add_decode_arguments, overrides_from_args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", required=True, help="export directory (steps/export.py)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    p.add_argument("--quantized", action="store_true", help="use the int8 ONNX graphs")
    p.add_argument("--wav-scp", help="Kaldi wav.scp (`utt path` or `utt command |`)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    p.add_argument(
        "--output-format",
        choices=("text", "ctm", "json"),
        default="text",
        help="text: `<utt> <text>`; ctm: per-token times and confidences; json: both",
    )
    p.add_argument("wavs", nargs="*", metavar="WAV")
    add_decode_arguments(p)
    a = p.parse_args(argv)
    if bool(a.wav_scp) == bool(a.wavs):
        p.error("give either --wav-scp FILE or WAV files")

    from e2e_asr.data.datadir import DataDirError
    from e2e_asr.decode.config import DecodeConfigError
    from e2e_asr.decode.jobs import Item, ModelSpec, basename_key, items_from_wav_scp, run_job
    from e2e_asr.decode.recognizer import RecognizerError
    from e2e_asr.model.checkpoint import CheckpointError

    try:
        if a.wav_scp:
            items = items_from_wav_scp(a.wav_scp)
        else:
            items = [Item(basename_key(w), w) for w in a.wavs]
        seen: dict[str, int] = {}
        for it in items:
            seen[it.key] = seen.get(it.key, 0) + 1
        dup = sorted(k for k, n in seen.items() if n > 1)
        if dup:
            raise DataDirError(f"duplicate utterance ids {dup[:5]}: outputs would be ambiguous")
        spec = ModelSpec(
            model_dir=a.model_dir,
            backend=a.backend,
            quantized=a.quantized,
            overrides=overrides_from_args(a),
        )
        times = a.output_format != "text"
        res = run_job(spec, items, a.threads, verbose=False, times=times)
    except (DataDirError, DecodeConfigError, RecognizerError, CheckpointError, OSError) as e:
        return report_error("transcribe", e)
    for it in items:
        text = res.hyps.get(it.key, "")
        if a.output_format == "text":
            print(f"{it.key} {text}".rstrip())
            continue
        toks = [t.to_dict(res.symbols[t.token]) for t in res.times.get(it.key, [])]
        if a.output_format == "ctm":
            for t in toks:
                print(
                    f"{it.key} 1 {t['start']:.2f} {t['duration']:.2f} {t['token']} "
                    f"{t['confidence']:.3f}"
                )
        else:
            obj = {"utt": it.key, "text": text, "tokens": toks}
            if it.key in res.failed:
                obj["error"] = res.failed[it.key]
            print(json.dumps(obj, ensure_ascii=False))
    for key, reason in res.failed.items():
        print(f"transcribe: {key}: {reason}", file=sys.stderr)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
