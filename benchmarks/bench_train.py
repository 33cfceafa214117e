#!/usr/bin/env python3
"""Training throughput of the seed-size model on CPU in fp32 and bf16, and its MFU.

One training step = forward + backward + gradient clipping + Adam update on a batch of
synthetic utterances of equal length (no padding, so every frame is useful work). Reported:

* input frames/s (feature frames of 10 ms consumed per second of wall time);
* achieved FLOP/s = analytic model FLOPs per step / step time, where a step costs 3x the
  forward FLOPs (forward, plus backward for activations and for weights); only matmul-like
  work is counted (linear layers, convolutions, attention scores and context);
* MFU = achieved FLOP/s / the matmul FLOP/s *of the same precision* measured in the same
  process (sustained rate of square matmuls, the better of two sizes, mean of the rates before
  and after the steps): fp32 steps against the fp32 matmul peak, bf16-autocast steps against
  the bf16 matmul peak;
* whether this CPU has native bf16 (``avx512_bf16``/``amx_bf16`` in /proc/cpuinfo): without
  it, bf16 is emulated and slower than fp32, and the script says so instead of hiding it;
* cpu_share: CPU time the process got / (wall time x threads), to tell a slow model from a
  busy machine; mfu_cpu_time: the same MFU ratio with both rates taken per CPU second of this
  process, which cancels time slices lost to other processes on a shared machine.

  python benchmarks/bench_train.py --config conf/finetune.yaml --steps 3 --precisions fp32,bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from e2e_asr.model import build_model
from e2e_asr.train.compile import compile_blocks
from e2e_asr.train.config import load_train_config
from e2e_asr.train.optimizer import build_optimizer
from e2e_asr.train.precision import Precision, cpu_bf16_flags
from e2e_asr.train.scheduler import build_schedule, resolve_auto_lr

REPO = Path(__file__).resolve().parents[1]


def conv_out(n: int) -> int:
    return (n - 1) // 2  # kernel 3, stride 2, no padding


def forward_flops(mc: dict[str, Any], batch: int, frames: int, tokens: int) -> dict[str, float]:
    """Multiply-accumulate work of one forward pass, x2 for FLOPs, by component."""
    if mc.get("encoder_type", "transformer") != "transformer":
        raise SystemExit("bench_train.py counts FLOPs of the Transformer encoder only")
    if mc["encoder_input_layer"] != "conv2d":
        raise SystemExit("bench_train.py counts FLOPs of the conv2d (x4) input layer only")
    d, ff, idim, vocab = (
        mc["encoder_attention_dim"],
        mc["encoder_linear_units"],
        mc["idim"],
        mc["odim"],
    )
    t1, f1 = conv_out(frames), conv_out(idim)
    t2, f2 = conv_out(t1), conv_out(f1)
    sub = 2 * (t1 * f1 * d * 9 + t2 * f2 * d * d * 9 + t2 * f2 * d * d)
    enc_block = 2 * (4 * t2 * d * d + 2 * t2 * t2 * d + 2 * t2 * d * ff)
    enc = mc["encoder_num_blocks"] * enc_block
    dd, dff = mc["decoder_attention_dim"], mc["decoder_linear_units"]
    length = tokens + 1  # <sos> + tokens / tokens + <eos>
    dec_block = 2 * (
        4 * length * dd * dd
        + 2 * length * length * dd  # self-attention
        + 2 * length * dd * dd
        + 2 * t2 * d * dd
        + 2 * length * t2 * dd  # source attention
        + 2 * length * dd * dff  # feed-forward
    )
    dec = mc["decoder_num_block"] * dec_block + 2 * length * dd * vocab  # + output layer
    ctc = 2 * t2 * d * vocab
    parts = {"subsampling": sub, "encoder": enc, "decoder": dec, "ctc": ctc}
    return {k: float(v * batch) for k, v in parts.items()}


def matmul_peak(
    sizes: tuple[int, ...] = (1024, 2048),
    seconds: float = 1.5,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """Sustained ``dtype`` matmul rate, the better size's mean over about ``seconds``:
    (FLOP per wall second, FLOP per CPU second of this process).

    A mean over a window (not the best single product) so that, on a shared machine, the
    peak sees the same kind of contention as the training steps it is compared with.
    """
    best_wall = best_cpu = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)  # warm-up (thread pool, allocation)
        done, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds / len(sizes) or done < 2:
            torch.mm(a, b)
            done += 1
        flops = done * 2.0 * n**3
        best_wall = max(best_wall, flops / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, flops / max(time.process_time() - c0, 1e-9))
    return best_wall, best_cpu


def measure(a: argparse.Namespace, cfg: dict[str, Any], precision: str) -> dict[str, Any]:
    """Steps of one precision (fp32 | bf16) and its MFU against the same dtype's matmul peak."""
    mc = cfg["model_config"]
    torch.manual_seed(0)
    model = build_model(mc, cfg["criterion_config"]).train()
    if a.compile:
        compile_blocks(model)
    opti, _ = resolve_auto_lr(cfg["opti_config"], None)  # lr: auto -> its no-base value
    opt = build_optimizer(model, opti, {})
    sched = build_schedule(opt, opti, step=25000)
    params = [q for q in model.parameters() if q.requires_grad]
    feats = torch.randn(a.batch_size, a.frames, mc["idim"])
    lens = torch.full((a.batch_size,), a.frames, dtype=torch.int64)
    ys = torch.randint(2, mc["odim"] - 1, (a.batch_size, a.tokens))
    amp = Precision("bf16" if precision == "bf16" else "off", torch.device("cpu"), "benchmark")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    seconds = a.peak_seconds

    peak_before = matmul_peak(seconds=seconds, dtype=dtype)

    def step() -> float:
        with amp.autocast():
            out = model(feats, lens, ys)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["train_config"]["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return float(out["loss"].detach())

    t_warm = time.perf_counter()
    for _ in range(a.warmup):
        step()
    warmup_s = time.perf_counter() - t_warm
    times = []
    cpu0 = time.process_time()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu_s = time.process_time() - cpu0
    # CPU time this process got / (wall time x threads): 1.0 on an idle machine
    cpu_share = cpu_s / (sum(times) * torch.get_num_threads())
    peak_after = matmul_peak(seconds=seconds, dtype=dtype)
    peak = (peak_before[0] + peak_after[0]) / 2
    peak_cpu = (peak_before[1] + peak_after[1]) / 2
    step_s = sum(times) / len(times)
    parts = forward_flops(mc, a.batch_size, a.frames, a.tokens)
    flops_step = 3.0 * sum(parts.values())
    achieved = flops_step / step_s
    return {
        "warmup_s": round(warmup_s, 1),
        "step_s": round(step_s, 3),
        "step_s_each": [round(t, 3) for t in times],
        "frames_per_s": round(a.batch_size * a.frames / step_s, 1),
        "gflop_per_step": round(flops_step / 1e9, 2),
        "forward_gflop_by_part": {k: round(v / 1e9, 2) for k, v in parts.items()},
        "achieved_gflops": round(achieved / 1e9, 2),
        "matmul_gflops_before_after": [
            round(peak_before[0] / 1e9, 2),
            round(peak_after[0] / 1e9, 2),
        ],
        "matmul_peak_gflops": round(peak / 1e9, 2),
        "cpu_share_during_steps": round(cpu_share, 2),
        "mfu": round(achieved / peak, 3),
        # the least-disturbed step: closest to what an idle machine gives
        "mfu_best_step": round(flops_step / min(times) / peak, 3),
        "frames_per_s_best_step": round(a.batch_size * a.frames / min(times), 1),
        # the same ratio per CPU second of this process: other load on the machine cancels
        "mfu_cpu_time": round((flops_step * a.steps / cpu_s) / peak_cpu, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=REPO / "conf" / "finetune.yaml")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--frames", type=int, default=500, help="frames per utterance (10 ms each)")
    p.add_argument("--tokens", type=int, default=20, help="tokens per utterance")
    p.add_argument("--steps", type=int, default=3, help="timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--peak-seconds", type=float, default=1.5, help="time per matmul-peak probe")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the blocks (train_config.compile)"
    )
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cfg = load_train_config(a.config)
    mc = cfg["model_config"]
    flags = cpu_bf16_flags()
    n_params = sum(q.numel() for q in build_model(mc, cfg["criterion_config"]).parameters())
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "params_M": round(n_params / 1e6, 2),
        "batch": f"{a.batch_size} x {a.frames} frames x {mc['idim']} dims, {a.tokens} tokens",
        "compiled": a.compile,
        "cpu_native_bf16": ", ".join(flags) if flags else "no (bf16 is emulated: slow)",
    }
    for k, v in result.items():
        print(f"{k}: {v}", flush=True)
    for precision in [x.strip() for x in a.precisions.split(",") if x.strip()]:
        if precision not in ("fp32", "bf16"):
            raise SystemExit(f"--precisions: {precision!r} is not fp32 or bf16")
        result[precision] = measure(a, cfg, precision)
        for kk, vv in result[precision].items():  # as soon as measured (bf16 may be slow)
            print(f"{precision}.{kk}: {vv}", flush=True)
    if "fp32" in result and "bf16" in result:
        result["bf16_speedup_vs_fp32"] = round(
            result["bf16"]["frames_per_s"] / result["fp32"]["frames_per_s"], 2
        )
    if "bf16_speedup_vs_fp32" in result:
        print(f"bf16_speedup_vs_fp32: {result['bf16_speedup_vs_fp32']}")
    if a.json is not None:
        a.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
