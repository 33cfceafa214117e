#!/usr/bin/env python3
"""Hotword biasing on the demo: phrase recall and CER with and without a hotword list.

  benchmarks/bench_hotwords.py (--model-dir EXP/export | --checkpoint CKPT)
      --corpus-dir exp/demo/corpus --out-dir DIR [--hotword-score 2.0]
      [--mode attention_rescoring] [--ctc-weight W] [--nj 1]

The list is the target domain's vocabulary: the place and organisation names (jieba tags
ns/nt, two characters or more) of the demo lexicon (local/demo/demo_text.py), written to
DIR/hotwords.txt. The demo's target test and source test (AISHELL-style wav/ + transcript.txt
under the corpus dir) become Kaldi data dirs under DIR/data, and each is decoded twice with
steps/decode.py, the real stage-6 command: with `--phrases` (recall measured, no biasing)
and with `--hotwords` (biased). Prints each command, its summary line, and a table.
The issue's targets: target recall +15 points or more with CER not worse; source CER not
worse by more than 0.3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "local" / "demo"))

from demo_text import build_lexicon, make_samplers  # noqa: E402
from make_corpus import SOURCE, TARGET, plan_split, render  # noqa: E402


def write_list(out: Path, corpus: Path) -> int:
    num_chars = 400
    done = corpus / ".done"
    if done.is_file():
        num_chars = int(json.loads(done.read_text(encoding="utf-8")).get("num_chars", 400))
    _, domain = make_samplers(build_lexicon(num_chars))
    out.write_text("".join(w + "\n" for w in sorted(set(domain.words))), encoding="utf-8")
    return len(set(domain.words))


def synth_clean_target_text(out: Path, n: int, seed: int = 7) -> Path:
    """``n`` sentences made like the target domain's (half of the words place and organisation
    names) but spoken like the source domain (its voices and speeds, clean): the words of the
    target, the acoustics a source-trained base model knows. Written as out/test/{wav,
    transcript.txt}; returns ``out`` (a corpus-like dir with one domain, ``test`` inside)."""
    import dataclasses

    dom = dataclasses.replace(SOURCE, name="clean_target_text", key_prefix="ctt", text=TARGET.text)
    (out / dom.name / "test" / "wav").mkdir(parents=True, exist_ok=True)
    specs = plan_split(dom, "test", n, seed, build_lexicon(), set(), out)
    for spec in specs:
        if not Path(spec.path).is_file():
            render(spec)
    lines = sorted(f"{spec.key} {spec.text}\n" for spec in specs)
    (out / dom.name / "test" / "transcript.txt").write_text("".join(lines), encoding="utf-8")
    return out


def make_dir(corpus: Path, domain: str, out: Path, limit: int = 0, split: str = "test") -> Path:
    from e2e_asr.data.datadir import Utterance, iter_kv, write_data_dir
    from e2e_asr.data.text import normalize

    src = corpus / domain / split
    utts = [
        Utterance(k, str((src / "wav" / f"{k}.wav").resolve()), normalize(t), k)
        for k, t in iter_kv(src / "transcript.txt")
    ]
    write_data_dir(out, utts[:limit] if limit > 0 else utts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir")
    src.add_argument("--checkpoint")
    p.add_argument("--corpus-dir", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--hotword-score", type=float)
    p.add_argument("--mode", default="attention_rescoring")
    p.add_argument("--ctc-weight", type=float, help="decode.py's --ctc-weight, for both decodes")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument(
        "--clean-target-text",
        type=int,
        default=0,
        metavar="N",
        help="also N synthesised utterances with target-domain text in source-domain voices "
        "(for a base model trained on the source domain only)",
    )
    p.add_argument("--limit", type=int, default=0, help="first N utterances of each set only")
    a = p.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    hot = a.out_dir / "hotwords.txt"
    print(f"{write_list(hot, a.corpus_dir)} phrases in {hot}")
    model = ["--model-dir", a.model_dir] if a.model_dir else ["--checkpoint", a.checkpoint]
    rows = {}
    sets = [("target", a.corpus_dir), ("source", a.corpus_dir)]
    if a.clean_target_text:
        synth = synth_clean_target_text(a.out_dir / "synth", a.clean_target_text)
        sets.append(("clean_target_text", synth))
    for domain, corpus in sets:
        data = make_dir(corpus, domain, a.out_dir / "data" / f"{domain}_test", a.limit)
        for biased in (False, True):
            name = "hotwords" if biased else "plain"
            cmd = [sys.executable, str(ROOT / "steps" / "decode.py"), *model]
            cmd += ["--data-dir", str(data), "--out-dir", str(a.out_dir / domain / name)]
            cmd += ["--mode", a.mode, "--nj", str(a.nj)]
            if a.ctc_weight is not None:
                cmd += ["--ctc-weight", str(a.ctc_weight)]
            cmd += ["--hotwords" if biased else "--phrases", str(hot)]
            if biased and a.hotword_score is not None:
                cmd += ["--hotword-score", str(a.hotword_score)]
            print("$ " + " ".join(cmd[1:]), flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            print(proc.stdout.strip().splitlines()[-1], flush=True)
            res = json.loads((a.out_dir / domain / name / "result.json").read_text())
            rows[(domain, name)] = res
    print("\n| set | CER plain | CER hotwords | recall plain | recall hotwords | false alarms |")
    print("|---|---:|---:|---:|---:|---:|")
    for domain, _ in sets:
        p_, h_ = rows[(domain, "plain")], rows[(domain, "hotwords")]
        print(
            f"| {domain}_test | {p_['cer']:.2f} | {h_['cer']:.2f} | "
            f"{p_['hotwords']['recall']:.1f} ({p_['hotwords']['recalled']}/"
            f"{p_['hotwords']['occurrences']}) | {h_['hotwords']['recall']:.1f} | "
            f"{p_['hotwords']['false_alarms']} -> {h_['hotwords']['false_alarms']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
