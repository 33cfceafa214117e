#!/usr/bin/env python3
"""Stage 6: decode a Kaldi data dir and score it.

  decode.py (--model-dir EXP_DIR/export --backend torch|onnx [--quantized] | --checkpoint CKPT)
            --data-dir DATA --out-dir DIR [--mode ctc_greedy|ctc_prefix_beam|attention|
            attention_rescoring] [--beam 10 --ctc-beam 15 --ctc-weight 0.3 ...] [--nj N]
            [--cmd "$decode_cmd"]

Reads DATA/wav.scp (+ DATA/segments) and DATA/text, computes features with the model's
feature config, decodes, and writes DIR/hyp.txt (Kaldi text), DIR/per_utt.txt (sclite-style
alignments with S/D/I), DIR/result.json ({"cer", "wer", "n_utts", "ref_units", "sub", "del",
"ins", ...}) and DIR/failed.txt for unreadable audio (scored as empty hypotheses). CER is
total edits / total reference characters over the set. Prints a one-line summary.

With --hotwords FILE the search favours the file's phrases (see README, "Hotwords"), and
result.json gains "hotwords": the recall of those phrases in the references (and false
alarms); --phrases FILE gives the same figures for a list without biasing the search.

The data dir is decoded in --nj jobs through --cmd ("$decode_cmd": utils/run.py on this
machine, utils/slurm.py on a cluster), each job a contiguous slice of the utterances; a killed
run re-runs only the unfinished jobs (per-job outputs and logs in DIR/jobs/ and DIR/log/).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

from e2e_asr.cli import report_error
from e2e_asr.decode.config import add_decode_arguments, overrides_from_args

RUNNER = Path(__file__).resolve().parent.parent / "utils" / "run.py"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="export directory (steps/export.py)")
    src.add_argument("--checkpoint", help="a raw checkpoint, decoded with PyTorch")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--quantized", action="store_true", help="use the int8 ONNX graphs")
    p.add_argument(
        "--decode-config",
        help="decoding options yaml (default: the package's decode.yaml, or the checkpoint's)",
    )
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--nj", type=int, default=1, help="decoding jobs (fewer for small sets)")
    p.add_argument(
        "--cmd",
        help='job runner, e.g. "$decode_cmd" from cmd.sh (default: utils/run.py of this repo)',
    )
    p.add_argument(
        "--threads", type=int, default=0, help="threads per job (0: Slurm's cpus, else cores / nj)"
    )
    p.add_argument("--name", help="model name for result.json / tables (default: out-dir name)")
    p.add_argument(
        "--phrases",
        metavar="FILE",
        help="phrase list (hotword file format) whose recall goes into result.json; no biasing",
    )
    add_decode_arguments(p)
    a = p.parse_args(argv)
    if a.checkpoint and (a.backend != "torch" or a.quantized):
        p.error("--checkpoint decodes with PyTorch; --backend onnx/--quantized need --model-dir")

    from e2e_asr.data.datadir import DataDirError
    from e2e_asr.data.feature_jobs import FeatureJobError
    from e2e_asr.data.io import atomic_write_lines
    from e2e_asr.decode.config import DecodeConfigError
    from e2e_asr.decode.context_graph import HotwordError, phrase_recall, read_phrases
    from e2e_asr.decode.jobs import ModelSpec
    from e2e_asr.decode.report import read_text, write_results
    from e2e_asr.decode.split_jobs import DecodeJobError, decode_data_dir

    phrase_file = a.hotwords or a.phrases
    if phrase_file:  # read first: a bad file should not wait for the whole decode
        try:
            phrases = [p for p, _, _ in read_phrases(phrase_file)]
        except HotwordError as e:
            return report_error("decode", e)

    spec = ModelSpec(
        model_dir=a.model_dir,
        checkpoint=a.checkpoint,
        backend=a.backend,
        quantized=a.quantized,
        decode_yaml=a.decode_config,
        overrides=overrides_from_args(a),
    )
    cmd = a.cmd or f"{shlex.quote(sys.executable)} {shlex.quote(str(RUNNER))}"
    try:
        res = decode_data_dir(spec, a.data_dir, a.out_dir, a.nj, cmd, a.threads)
        refs = read_text(Path(a.data_dir) / "text")
        decoded = res.hyps.keys() | res.failed.keys()
        if decoded != refs.keys():
            odd = sorted(decoded ^ refs.keys())
            raise DataDirError(
                f"{a.data_dir}: {len(odd)} utterances are in only one of text and "
                f"wav.scp/segments (first: {odd[0]})"
            )
    except (DataDirError, DecodeConfigError, DecodeJobError, FeatureJobError, OSError) as e:
        return report_error("decode", e)
    out = Path(a.out_dir)
    name = a.name or out.name
    label = "torch" if a.checkpoint else a.backend + ("-int8" if a.quantized else "")
    extra = {
        "set": Path(a.data_dir).name,
        "model": name,
        "backend": label,
        "mode": res.config.get("mode"),
        "decode_config": res.config,
        "failed": len(res.failed),
        "audio_seconds": round(res.audio_seconds, 2),
        "decode_seconds": round(res.decode_seconds, 2),
        "rtf": round(res.decode_seconds / max(res.audio_seconds, 1e-9), 4),
    }
    if phrase_file:
        recall = phrase_recall(refs, res.hyps, phrases)
        extra["hotwords"] = {"file": phrase_file, "biased": bool(a.hotwords), **recall.to_dict()}
    score = write_results(out, refs, res.hyps, extra)
    atomic_write_lines(out / "failed.txt", (f"{k}\t{v}" for k, v in sorted(res.failed.items())))
    for k, v in sorted(res.failed.items())[:10]:
        print(f"decode: {k}: {v}", file=sys.stderr)
    line = f"{extra['set']} {name} ({label}): {score.summary()}; RTF {extra['rtf']:.3f}"
    if "hotwords" in extra:
        h = extra["hotwords"]
        line += (
            f"; phrase recall {h['recall']:.2f}% ({h['recalled']}/{h['occurrences']}"
            f"{', biased' if h['biased'] else ''}), false alarms {h['false_alarms']}"
        )
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
