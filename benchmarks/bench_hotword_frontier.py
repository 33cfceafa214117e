#!/usr/bin/env python3
"""How far hotword biasing can go on the demo: recall gained against CER lost, over a grid.

  benchmarks/bench_hotword_frontier.py --model-dir EXP/export --corpus-dir exp/demo/corpus
      --out-dir DIR [--split test|dev] [--ctc-weights 0.3,0.5,0.7]
      [--search-scores 1,1.5,2,2.5,3] [--final-scores 0.5,0.75,1,1.25,1.5,2]
      [--confidence-at 0.5,1,1]

The list and the sets are bench_hotwords.py's: the target domain's place and organisation
names, the target and the source domain's --split. Each utterance is encoded once; for each
search score S (0: no list) the CTC prefix beam search (decode.yaml's ctc_beam, with the
list at score S) gives an n-best, which attention rescoring picks from with

    ctc_weight * acoustic CTC score + (1 - ctc_weight) * decoder score + F * phrase bonus

(the phrase bonus at 1.0 per token, withdrawn as the context graph does). F = S is what
decode.py does (the bonus counted in full, ``search.rescore_nbest``); other F separate the
bonus of the search from the bonus of the final choice. Each setting is compared with the
same ctc_weight without the list. Also printed: the oracle recall of each n-best (the
hypothesis with the most reference phrases picked per utterance), i.e. how many names the
search found, whatever the final choice; and, at one setting (--confidence-at CTC_WEIGHT,
SEARCH,FINAL), the CTC confidence (``alignment.token_times``: the posterior along the forced
alignment; a phrase's lowest) of the names the list wins on the target set and of those it
wrongly adds (false alarms) on both sets. Writes DIR/frontier.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hotwords import make_dir, write_list  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--corpus-dir", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--split", default="test", choices=("test", "dev"))
    p.add_argument("--ctc-weights", type=floats, default=floats("0.3,0.5,0.7"))
    p.add_argument("--search-scores", type=floats, default=floats("1,1.5,2,2.5,3"))
    p.add_argument("--final-scores", type=floats, default=floats("0.5,0.75,1,1.25,1.5,2"))
    p.add_argument("--confidence-at", type=floats, default=floats("0.5,1,1"))
    a = p.parse_args(argv)
    if len(a.confidence_at) != 3 or a.confidence_at[1] not in a.search_scores:
        p.error("--confidence-at takes CTC_WEIGHT,SEARCH,FINAL with SEARCH one of --search-scores")
    from e2e_asr.data.datadir import DataDirError
    from e2e_asr.decode.recognizer import RecognizerError

    try:
        return run(a)
    except (DataDirError, RecognizerError, OSError) as e:
        print(f"bench_hotword_frontier: {e}", file=sys.stderr)
        return 1


def run(a: argparse.Namespace) -> int:

    import torch

    from e2e_asr.data.audio import load_audio
    from e2e_asr.data.datadir import read_data_dir
    from e2e_asr.decode.alignment import token_times
    from e2e_asr.decode.context_graph import load_hotwords, phrase_recall, read_phrases
    from e2e_asr.decode.recognizer import Recognizer
    from e2e_asr.decode.scoring import score_corpus
    from e2e_asr.decode.search import ctc_prefix_beam, hypothesis_logprobs, rescore_nbest

    torch.set_num_threads(1)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    hot = a.out_dir / "hotwords.txt"
    write_list(hot, a.corpus_dir)
    phrases = [ph for ph, _, _ in read_phrases(hot)]  # as decode.py measures recall
    rec = Recognizer.from_model_dir(a.model_dir, backend="torch")
    cfg = rec.config
    unit_graph = load_hotwords(hot, rec.tokenizer, 1.0)

    def text(ids: list[int]) -> str:
        return rec.text(ids).replace(" ", "")

    # per set and search score: {utt: (token ids, texts, acoustic, decoder, unit bonus)}
    nbests: dict[tuple[str, float], dict[str, tuple]] = {}
    refs: dict[str, dict[str, str]] = {}
    posteriors: dict[tuple[str, str], np.ndarray] = {}
    for domain in ("target", "source"):
        src = a.corpus_dir / domain / a.split
        out = a.out_dir / "data" / f"{domain}_{a.split}"
        data = make_dir(a.corpus_dir, domain, out, split=a.split)
        utts = read_data_dir(data)
        refs[domain] = {u.utt: u.text.replace(" ", "") for u in utts}
        print(f"{domain}: {len(utts)} utterances of {src}", flush=True)
        encoded = []
        for u in utts:
            feats = rec.features(load_audio(u.wav, rec.feature_config.sample_rate))
            enc, enc_lens, lp = rec.scorer.encode(feats[None], np.array([feats.shape[0]]))
            n = int(np.asarray(enc_lens)[0])
            encoded.append((u.utt, enc, n, np.asarray(lp)[0, :n]))
            posteriors[(domain, u.utt)] = encoded[-1][3]
        for s in [0.0, *a.search_scores]:
            graph = load_hotwords(hot, rec.tokenizer, s) if s else None
            rows = {}
            for utt, enc, n, lp in encoded:
                nbest = ctc_prefix_beam(lp, n, beam=cfg.ctc_beam, context=graph)[: cfg.beam]
                hyps = [h for h, _ in nbest]
                acoustic = np.array([v - (graph.score(h) if graph else 0.0) for h, v in nbest])
                att = hypothesis_logprobs(rec.scorer, enc, np.array([n]), hyps)
                bonus = np.array([unit_graph.score(h) for h in hyps])
                rows[utt] = (hyps, [text(h) for h in hyps], acoustic, att, bonus)
                if graph is not None and len(rows) <= 3:  # F = S is decode.py's own rule
                    mine = hyps[int(np.argmax(_combine(acoustic, att, bonus, cfg.ctc_weight, s)))]
                    lens = np.array([n])
                    ref = rescore_nbest(rec.scorer, enc, lens, [nbest], cfg.ctc_weight, graph)
                    if mine != ref[0]:
                        raise SystemExit(f"{utt}: this bench's choice differs from rescore_nbest's")
            nbests[(domain, s)] = rows
            print(f"  n-best at search score {s}: done", flush=True)

    def measure(domain: str, hyps: dict[str, str]) -> tuple[float, float]:
        cer = score_corpus(refs[domain], hyps).cer.error_rate
        return cer, phrase_recall(refs[domain], hyps, phrases).recall

    def pick_ids(domain: str, s: float, cw: float, f: float) -> dict[str, int]:
        return {
            utt: int(np.argmax(_combine(ac, att, b, cw, f)))
            for utt, (_, _, ac, att, b) in nbests[(domain, s)].items()
        }

    def pick(domain: str, s: float, cw: float, f: float) -> dict[str, str]:
        rows = nbests[(domain, s)]
        return {utt: rows[utt][1][i] for utt, i in pick_ids(domain, s, cw, f).items()}

    results = []
    oracle = {}
    for s in [0.0, *a.search_scores]:
        found = total = 0
        for utt, (_, hs, *_rest) in nbests[("target", s)].items():
            ref = refs["target"][utt]
            said = [ph for ph in phrases if ph in ref]
            per_hyp = [phrase_recall({utt: ref}, {utt: h}, said) for h in hs]
            found += max(r.recalled for r in per_hyp)
            total += per_hyp[0].occurrences
        oracle[s] = 100.0 * found / total
    print(f"\nsplit {a.split}; oracle target recall of the n-best by search score:")
    print("  " + ", ".join(f"{s:g}: {v:.1f}%" for s, v in oracle.items()))
    print(
        "\n| ctc_weight | search | final | target recall gain | target CER change "
        "| source CER change |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for cw in a.ctc_weights:
        t0, r0 = measure("target", pick("target", 0.0, cw, 0.0))
        s0, _ = measure("source", pick("source", 0.0, cw, 0.0))
        for s in a.search_scores:
            for f in sorted({*a.final_scores, s}):
                t1, r1 = measure("target", pick("target", s, cw, f))
                s1, _ = measure("source", pick("source", s, cw, f))
                row = {
                    "ctc_weight": cw,
                    "search_score": s,
                    "final_score": f,
                    "recall_without": round(r0, 2),
                    "recall_gain": round(r1 - r0, 2),
                    "target_cer_change": round(t1 - t0, 2),
                    "source_cer_change": round(s1 - s0, 2),
                }
                row["meets_goal"] = (
                    row["recall_gain"] >= 15
                    and row["target_cer_change"] <= 0
                    and row["source_cer_change"] <= 0.3
                )
                results.append(row)
                print(
                    f"| {cw:g} | {s:g} | {f:g} | {r1 - r0:+.2f} | {t1 - t0:+.2f} | {s1 - s0:+.2f} |"
                    + (" goal met" if row["meets_goal"] else "")
                )
    within = [r for r in results if r["source_cer_change"] <= 0.3 and r["target_cer_change"] <= 0]
    best = max(within, key=lambda r: r["recall_gain"], default=None)
    print(f"\nbest recall gain with source CER within +0.3: {best}")
    print(f"settings meeting the goal: {sum(r['meets_goal'] for r in results)} of {len(results)}")
    cw, s, f = a.confidence_at
    conf: dict[str, list[float]] = {"target_won": [], "target_false": [], "source_false": []}
    for domain in ("target", "source"):
        plain = pick(domain, 0.0, cw, 0.0)
        rows = nbests[(domain, s)]
        for utt, i in pick_ids(domain, s, cw, f).items():
            ids, hyp, ref, before = rows[utt][0][i], rows[utt][1][i], refs[domain][utt], plain[utt]
            tok_conf = [t.confidence for t in token_times(posteriors[(domain, utt)], ids, 1.0)]
            tok_of_char = [j for j, t in enumerate(ids) for _ in text([t])]
            for ph in phrases:
                won = min(ref.count(ph), hyp.count(ph)) - min(ref.count(ph), before.count(ph))
                false = max(0, hyp.count(ph) - ref.count(ph)) - max(
                    0, before.count(ph) - ref.count(ph)
                )
                if domain == "target" and won > 0:
                    key = "target_won"
                elif false > 0:
                    key = f"{domain}_false"
                else:
                    continue
                at = [k for k in range(len(hyp)) if hyp.startswith(ph, k)]
                lows = [min(tok_conf[tok_of_char[c]] for c in range(k, k + len(ph))) for k in at]
                conf[key].extend(lows)
    print(f"\nCTC confidence of the names at ctc_weight {cw:g}, search {s:g}, final {f:g}:")
    for key, vals in conf.items():
        med = f"median {np.median(vals):.3f}" if vals else "none"
        print(f"  {key.replace('_', ' ')}: {len(vals)} occurrences, {med}")
    confidence = {
        k: {"n": len(v), "median": float(np.median(v)) if v else None} for k, v in conf.items()
    }
    out = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "split": a.split,
        "oracle_recall": oracle,
        "settings": results,
        "best": best,
        "confidence_at": {"ctc_weight": cw, "search_score": s, "final_score": f, **confidence},
    }
    (a.out_dir / "frontier.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


def _combine(acoustic, att, bonus, ctc_weight: float, final_score: float) -> np.ndarray:
    return ctc_weight * acoustic + (1.0 - ctc_weight) * att + final_score * bonus


if __name__ == "__main__":
    sys.exit(main())
