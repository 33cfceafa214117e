#!/usr/bin/env python3
"""Decoding speed (RTF) of the seed-size model on one thread: PyTorch, ORT fp32, ORT int8,
each with CTC prefix beam search, attention rescoring and attention beam search, next to a
lower bound from the encoder's FLOPs and this machine's matmul speed measured in the same run.

  benchmarks/bench_decode.py [--utts 3] [--seconds 10] [--work-dir DIR] [--threads 1]
                             [--repeats 3] [--att-utts 1] [--goal-repeats 7] [--goal-only]

The model has random weights (seed config: 14x320 encoder, 8 heads, FF 2048, 7 decoder
blocks with 4 heads, 5720 units, conv2d input, 40-dim features). A random CTC layer is
almost uniform and would emit a token on nearly every frame; its blank bias is raised until
the prefix-beam output has about 4.5 tokens per second, a Mandarin speaking rate, so that
the search and rescoring do realistic amounts of work. Inputs are random features with the
model's CMVN statistics; feature extraction is timed separately (it is the same for every
backend). RTF = decode time / audio time, batch 1, model loading excluded, the best of
``--repeats`` runs (the machine may be shared). The bound is fp32 FLOPs at the measured fp32
matmul speed (plus the n-best's decoder FLOPs for rescoring); int8 kernels can beat it
("x bound" < 1).

The attention decoder runs two ways, side by side: ``incremental`` (the key/value cache for
beam search, the n-best merged into one prefix tree for rescoring; what decoding uses when
the export has decoder_step.onnx) and ``whole-prefix`` (the decoder re-run over each whole
hypothesis, as exports without it decode). The last lines give the attention beam search
speed-up of the cache and the goal: the full int8 decode with attention rescoring (encoder,
CTC prefix beam search, incremental rescoring) as a fraction of the fp32 ONNX encoder alone
(<= 0.7). Those two are measured side by side, utterance by utterance in turn, so that both
see the same machine state, each utterance's best of ``--goal-repeats``, in process CPU time
and wall time; ``--goal-only`` measures just them. The attention beam search rows stop at 4.5
tokens per second of audio (maxlenratio): a random decoder hardly ever ends a hypothesis.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import _venv  # noqa: F401  (runs with the project's .venv, also in a fresh shell)
import numpy as np
import torch

SEED_MODEL = dict(
    idim=40,
    odim=5720,
    encoder_attention_dim=320,
    encoder_attention_heads=8,
    encoder_linear_units=2048,
    encoder_num_blocks=14,
    encoder_input_layer="conv2d",
    decoder_attention_dim=320,
    decoder_attention_heads=4,
    decoder_linear_units=2048,
    decoder_num_block=7,
)
TOKENS_PER_SECOND = 4.5
FRAMES_PER_SECOND = 100


def encoder_flops(frames: int, mc: dict) -> float:
    """Multiply-adds x 2 of conv2d subsampling, the encoder blocks and the CTC projection."""
    d, ff, D, V = mc["encoder_attention_dim"], mc["encoder_linear_units"], mc["idim"], mc["odim"]
    t1, f1 = (frames - 1) // 2, (D - 1) // 2
    t2, f2 = (t1 - 1) // 2, (f1 - 1) // 2
    macs = t1 * f1 * d * 9  # conv 1 (one input channel)
    macs += t2 * f2 * d * d * 9  # conv 2
    macs += t2 * (d * f2) * d  # linear to d
    per_block = 4 * t2 * d * d + 2 * t2 * t2 * d + 2 * t2 * d * ff
    macs += mc["encoder_num_blocks"] * per_block
    macs += t2 * d * V  # CTC
    return 2.0 * macs


def rescoring_flops(frames: int, tokens: float, nbest: int, mc: dict) -> float:
    """Decoder FLOPs to score ``nbest`` hypotheses of ``tokens`` tokens (+ sos) against one
    utterance, with the source keys/values computed once (broadcast encoder row)."""
    d, ff, V = mc["decoder_attention_dim"], mc["decoder_linear_units"], mc["odim"]
    t2 = ((frames - 1) // 2 - 1) // 2
    L = tokens + 1
    per_hyp_layer = 4 * L * d * d + 2 * L * L * d + 2 * L * d * d + 2 * L * t2 * d + 2 * L * d * ff
    macs = mc["decoder_num_block"] * (nbest * per_hyp_layer + 2 * t2 * d * d)
    macs += nbest * L * d * V
    return 2.0 * macs


def matmul_gflops(seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of encoder-shaped matmuls (250 x 320 by 320 x 2048) on this thread."""
    a, b = torch.randn(250, 320), torch.randn(320, 2048)
    for _ in range(5):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ b
        n += 20
    return n * 2 * 250 * 320 * 2048 / (time.perf_counter() - t0) / 1e9


def build_package(work: Path, log) -> Path:
    from e2e_asr.decode.search import ctc_prefix_beam
    from e2e_asr.export.package import export_package
    from e2e_asr.model import build_model
    from e2e_asr.model.checkpoint import save_checkpoint

    export = work / "export"
    if (export / "metadata.json").is_file():
        if json.loads((export / "metadata.json").read_text()).get("incremental_decoder"):
            log(f"reusing {export}")
            return export
        log(f"{export} has no incremental decoder graphs: exporting again")
    torch.manual_seed(0)
    model = build_model(SEED_MODEL, {"rate": 0.3}).eval()
    rng = np.random.default_rng(0)
    mean, istd = _cmvn(0)
    model.set_cmvn(torch.from_numpy(mean), torch.from_numpy(istd))
    # calibrate the blank bias (bisection) for ~TOKENS_PER_SECOND tokens in the prefix-beam
    # output, which sets how much work rescoring does
    feats = torch.from_numpy(_feats(rng, mean, istd, 10 * FRAMES_PER_SECOND)[None])
    with torch.no_grad():
        enc, lens = model.encode(feats, torch.tensor([feats.shape[1]]))
        lo, hi = 0.0, 50.0
        for _ in range(12):
            mid = (lo + hi) / 2
            model.ctc.ctc_lo.bias[0] = mid
            lp = model.ctc_log_probs(enc)[0].numpy()
            n = len(ctc_prefix_beam(lp, int(lens[0]), beam=15)[0][0])
            lo, hi = (mid, hi) if n > TOKENS_PER_SECOND * 10 else (lo, mid)
    log(f"blank bias {model.ctc.ctc_lo.bias[0].item():.2f}: {n} tokens in 10 s")
    units = ["<blank>", "<unk>", *[chr(0x4E00 + i) for i in range(5717)], "<sos/eos>"]
    ckpt = work / "checkpoint.seed"
    save_checkpoint(
        ckpt,
        {
            "model": model.state_dict(),
            "config": {"model_config": SEED_MODEL, "criterion_config": {"rate": 0.3}},
            "units": units,
            "feature_config": {"type": "mfcc_hires", "num_mel_bins": 40, "num_ceps": 40},
            "epoch": 0,
            "step": 0,
        },
    )
    t0 = time.perf_counter()
    export_package(ckpt, export, log=log)
    log(f"export took {time.perf_counter() - t0:.0f} s")
    return export


def _cmvn(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(10, 3, 40).astype(np.float32)
    istd = (1 / rng.uniform(1, 4, 40)).astype(np.float32)
    return mean, istd


def _feats(rng, mean, istd, frames) -> np.ndarray:
    return (rng.standard_normal((frames, len(mean))) / istd + mean).astype(np.float32)


def run_encoder(scorer, utts, repeats: int) -> tuple[float, float]:
    """Best of ``repeats``: (wall, CPU) seconds of the scorer's encoder alone over ``utts``,
    batch 1."""
    best = (float("inf"), float("inf"))
    scorer.encode(utts[0][1][None], np.array([len(utts[0][1])]))  # warm-up
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _, f in utts:
            scorer.encode(f[None], np.array([len(f)], dtype=np.int64))
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def measure_goal(export: Path, utts, seconds: float, threads: int, repeats: int) -> dict:
    """The goal's two figures side by side: for each utterance in turn, the fp32 ONNX encoder
    alone, then the full int8 decode with attention rescoring (encoder, CTC prefix beam search,
    incremental rescoring), so both see the same machine state. Each utterance's best of
    ``repeats`` for each (a shared machine disturbs some calls, rarely the same utterance in
    every pass), summed over the utterances, as RTF in wall and process CPU time."""
    from e2e_asr.decode.recognizer import Recognizer

    def recognizer(quantized: bool) -> Recognizer:
        return Recognizer.from_model_dir(
            export, "onnx", quantized, num_threads=threads, mode="attention_rescoring", batch_size=1
        )

    fp32, int8 = recognizer(False), recognizer(True)
    assert int8.scorer.incremental
    lens = [np.array([len(f)], dtype=np.int64) for _, f in utts]
    runs = {
        "fp32_encoder": lambda i: fp32.scorer.encode(utts[i][1][None], lens[i]),
        "int8_decode": lambda i: int8.decode_features(utts[i : i + 1]),
    }
    for run in runs.values():  # warm-up (allocations, lazy init)
        run(0)
    # [name][utterance]: best wall and best CPU seconds over the repeats
    best = {name: [[float("inf")] * 2 for _ in utts] for name in runs}
    for _ in range(repeats):
        for i in range(len(utts)):
            for name, run in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                run(i)
                b = best[name][i]
                b[0] = min(b[0], time.perf_counter() - t0)
                b[1] = min(b[1], time.process_time() - c0)
    audio = len(utts) * seconds
    out = {
        name: {
            "rtf": sum(w for w, _ in per_utt) / audio,
            "cpu_rtf": sum(c for _, c in per_utt) / audio,
        }
        for name, per_utt in best.items()
    }
    out["ratio"] = out["int8_decode"]["rtf"] / out["fp32_encoder"]["rtf"]
    out["cpu_ratio"] = out["int8_decode"]["cpu_rtf"] / out["fp32_encoder"]["cpu_rtf"]
    out["repeats"] = repeats
    out["load_average"] = os.getloadavg()[0]
    return out


def print_goal(g: dict) -> None:
    f, q = g["fp32_encoder"], g["int8_decode"]
    print(
        f"goal: full int8 decode with attention rescoring / fp32 ONNX encoder alone, side by "
        f"side, each utterance's best of {g['repeats']} (load average {g['load_average']:.1f}):"
    )
    print(
        f"  CPU time  {q['cpu_rtf']:.4f} / {f['cpu_rtf']:.4f} = {g['cpu_ratio']:.2f}x "
        f"(goal <= 0.70)"
    )
    print(f"  wall time {q['rtf']:.4f} / {f['rtf']:.4f} = {g['ratio']:.2f}x (goal <= 0.70)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--utts", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", help="keeps the exported seed-size model between runs")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs per row")
    p.add_argument(
        "--att-utts", type=int, default=1, help="utterances for the attention beam search rows"
    )
    p.add_argument(
        "--goal-repeats", type=int, default=7, help="best of this many for the goal's figures"
    )
    p.add_argument("--goal-only", action="store_true", help="measure only the goal's two figures")
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    load = os.getloadavg()[0]
    from e2e_asr.data.features import FeatureConfig, compute_features
    from e2e_asr.decode.recognizer import Recognizer

    def log(m: str) -> None:
        print(f"# {m}", flush=True)

    work = Path(a.work_dir or tempfile.mkdtemp(prefix="bench_decode."))
    work.mkdir(parents=True, exist_ok=True)
    export = build_package(work, log)

    frames = int(a.seconds * FRAMES_PER_SECOND)
    audio_s = a.utts * a.seconds
    rng = np.random.default_rng(1)
    mcfg = json.loads((export / "metadata.json").read_text())
    mean, istd = _cmvn(0)  # the statistics the model was built with
    utts = [(f"u{i}", _feats(rng, mean, istd, frames)) for i in range(a.utts)]
    if a.goal_only:
        goal = measure_goal(export, utts, a.seconds, a.threads, a.goal_repeats)
        print(
            f"{a.utts} x {a.seconds:.0f} s utterances, {a.threads} thread(s); seed-size model "
            f"(random weights); load average before: {load:.1f}"
        )
        print_goal(goal)
        if a.json:
            Path(a.json).write_text(json.dumps({"goal": goal}, indent=2))
        return

    fc = FeatureConfig.from_dict({**mcfg["feature_config"], "dither": 0.0})
    wav = (0.1 * rng.standard_normal(int(a.seconds * 16000))).astype(np.float32)
    compute_features(wav, fc)
    t0 = time.perf_counter()
    for _ in range(a.utts):
        compute_features(wav, fc)
    feat_rtf = (time.perf_counter() - t0) / audio_s

    gflops = matmul_gflops()
    flops = encoder_flops(frames, SEED_MODEL)
    bound = flops / (gflops * 1e9) / a.seconds

    def run(rec, items):
        """Best of a.repeats: (total s, encoder s, total CPU s, encoder CPU s, hypotheses)."""
        rec.decode_features(items[:1])  # warm-up (allocations, lazy init)
        sc, best = rec.scorer, None
        orig = sc.encode
        for _ in range(a.repeats):
            t_enc = c_enc = 0.0

            def timed(feats, lens, orig=orig):
                nonlocal t_enc, c_enc
                t, c = time.perf_counter(), time.process_time()
                out = orig(feats, lens)
                t_enc += time.perf_counter() - t
                c_enc += time.process_time() - c
                return out

            sc.encode = timed
            t0, c0 = time.perf_counter(), time.process_time()
            hyps = rec.decode_features(items)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            sc.encode = orig
            if best is None or total < best[0]:
                best = (total, t_enc, cpu, c_enc, hyps)
        return best

    enc_frames_per_second = FRAMES_PER_SECOND / mcfg["subsampling"]
    rows = []
    plan = [
        ("ctc_prefix_beam", "-", utts),
        ("attention_rescoring", "whole-prefix", utts),
        ("attention_rescoring", "incremental", utts),
        ("attention", "whole-prefix", utts[: a.att_utts]),
        ("attention", "incremental", utts[: a.att_utts]),
    ]
    enc_alone = {}
    for name, backend, quantized in (
        ("torch", "torch", False),
        ("ORT fp32", "onnx", False),
        ("ORT int8", "onnx", True),
    ):
        for mode, decoder, items in plan:
            kw = {}
            if mode == "attention":
                # a random decoder hardly ever chooses eos: stop at the speaking rate's length
                kw["maxlenratio"] = TOKENS_PER_SECOND / enc_frames_per_second
            rec = Recognizer.from_model_dir(
                export, backend, quantized, num_threads=a.threads, mode=mode, batch_size=1, **kw
            )
            if decoder == "whole-prefix":
                rec.scorer.incremental = False
            assert decoder != "incremental" or rec.scorer.incremental
            total, t_enc, cpu, c_enc, hyps = run(rec, items)
            audio = len(items) * a.seconds
            rows.append(
                {
                    "backend": name,
                    "mode": mode,
                    "decoder": decoder,
                    "utts": len(items),
                    "rtf": total / audio,
                    "encoder_rtf": t_enc / audio,
                    "search_rtf": (total - t_enc) / audio,
                    "cpu_rtf": cpu / audio,
                    "cpu_encoder_rtf": c_enc / audio,
                    "cpu_search_rtf": (cpu - c_enc) / audio,
                    "tokens_per_utt": float(np.mean([len(h) for h in hyps])),
                    "hyps": hyps,
                }
            )
            r = rows[-1]
            extra = 0.0
            if mode == "attention_rescoring":
                nb = rec.config.beam
                extra = rescoring_flops(frames, r["tokens_per_utt"], nb, SEED_MODEL)
            r["bound_rtf"] = (flops + extra) / (gflops * 1e9) / a.seconds
            log(f"{name:8s} {mode:20s} {decoder:12s} RTF {r['rtf']:.4f}")
            if backend == "onnx" and mode == "attention_rescoring" and decoder == "incremental":
                # the encoder graph alone, right after (same machine state)
                wall, cpu = run_encoder(rec.scorer, utts, a.repeats)
                enc_alone[name] = {"rtf": wall / audio_s, "cpu_rtf": cpu / audio_s}
                log(f"{name:8s} encoder alone        RTF {enc_alone[name]['rtf']:.4f}")
    same = {(r["backend"], r["mode"]): r["hyps"] for r in rows if r["decoder"] == "whole-prefix"}
    for r in rows:
        if r["decoder"] == "incremental":
            r["same_hyps_as_whole_prefix"] = r["hyps"] == same[(r["backend"], r["mode"])]

    print()
    print(
        f"{a.utts} x {a.seconds:.0f} s utterances ({a.att_utts} for attention beam search), "
        f"{a.threads} thread(s), best of {a.repeats}; seed-size model (random weights); "
        f"matmul {gflops:.1f} GFLOP/s fp32; encoder {flops / 1e9:.1f} GFLOP per utterance"
    )
    print(
        f"load average before the run: {load:.1f}, after: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(
        f"lower bound (encoder FLOPs / matmul speed): RTF {bound:.4f}; features: RTF "
        f"{feat_rtf:.4f}; the rescoring rows' bound adds the decoder FLOPs of the n-best"
    )
    print()
    print(
        "| backend | mode | decoder | RTF | encoder | search | tokens/utt | bound | x bound "
        "| CPU RTF | CPU encoder | CPU search |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['mode']} | {r['decoder']} | {r['rtf']:.4f} | "
            f"{r['encoder_rtf']:.4f} | {r['search_rtf']:.4f} | {r['tokens_per_utt']:.0f} | "
            f"{r['bound_rtf']:.4f} | {r['rtf'] / r['bound_rtf']:.2f} | {r['cpu_rtf']:.4f} | "
            f"{r['cpu_encoder_rtf']:.4f} | {r['cpu_search_rtf']:.4f} |"
        )
    print()
    print("(CPU: process CPU time / audio time; on a loaded machine it stays near the quiet")
    print("machine's wall time while wall time grows with the load)")
    for name, e in enc_alone.items():
        print(f"{name} encoder alone: RTF {e['rtf']:.4f}, CPU RTF {e['cpu_rtf']:.4f}")
    for name in ("torch", "ORT fp32", "ORT int8"):
        att = {r["decoder"]: r for r in rows if r["backend"] == name and r["mode"] == "attention"}
        resc = {
            r["decoder"]: r
            for r in rows
            if r["backend"] == name and r["mode"] == "attention_rescoring"
        }
        old, new = att["whole-prefix"]["search_rtf"], att["incremental"]["search_rtf"]
        c_old, c_new = att["whole-prefix"]["cpu_search_rtf"], att["incremental"]["cpu_search_rtf"]
        print(
            f"{name}: attention beam search, search RTF {old:.4f} -> {new:.4f} "
            f"({old / new:.1f}x; CPU {c_old:.4f} -> {c_new:.4f}, {c_old / c_new:.1f}x), "
            "same hypotheses: "
            f"{att['incremental']['same_hyps_as_whole_prefix']}; attention rescoring, search "
            f"RTF {resc['whole-prefix']['search_rtf']:.4f} -> "
            f"{resc['incremental']['search_rtf']:.4f}, same hypotheses: "
            f"{resc['incremental']['same_hyps_as_whole_prefix']}"
        )
    print(
        "(int8: the decoder graphs quantize their activations per call, so the step graph and "
        "the whole-prefix graph round differently and may choose other hypotheses; fp32 gives "
        "the same ones)"
    )
    print()
    goal = measure_goal(export, utts, a.seconds, a.threads, a.goal_repeats)
    print_goal(goal)
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "matmul_gflops": gflops,
                    "encoder_gflop": flops / 1e9,
                    "bound_rtf": bound,
                    "feature_rtf": feat_rtf,
                    "encoder_alone_rtf": enc_alone,
                    "goal": goal,
                    "rows": [{k: v for k, v in r.items() if k != "hyps"} for r in rows],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
