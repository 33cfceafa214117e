"""Numeric precision of training: ``train_config.amp: auto | bf16 | fp16 | off``.

* ``auto`` (default): bf16 autocast where the hardware does bf16 natively - a CPU that reports
  ``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``, a GPU for which
  ``torch.cuda.is_bf16_supported()`` holds (Ampere and later); fp16 autocast with a
  ``GradScaler`` on a GPU without bf16; fp32 everywhere else.
* ``bf16`` / ``fp16`` force that type (fp16 only on CUDA: it needs loss scaling); ``off`` is fp32.
* The seed's ``amp: True`` means ``auto``, ``amp: False`` means ``off``.

Only the model's forward runs under autocast. Losses, log-softmax statistics and CMVN stay in
fp32 (the model computes them in fp32), and so do the weights, gradients and Adam's moments:
autocast casts copies for the matmuls, it never changes the parameters. On GPUs, fp32 matmuls
may use TF32 (``torch.backends.cuda.matmul.allow_tf32``), which Ampere+ runs several times faster
at about 1e-3 relative precision. The choice and its reason are logged at start.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("e2e_asr.train")

AMP_MODES = ("auto", "bf16", "fp16", "off")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class PrecisionError(ValueError):
    """An ``amp`` setting the device cannot run; the message says what to use instead."""


def normalize_amp(value: Any) -> str:
    """``True`` -> ``auto``, ``False`` -> ``off``; strings as given (lower case)."""
    if value is True:
        return "auto"
    if value is False or value is None:
        return "off"
    mode = str(value).lower()
    if mode not in AMP_MODES:
        raise PrecisionError(f"train_config.amp must be auto|bf16|fp16|off, got {value!r}")
    return mode


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The native-bf16 flags this CPU reports (empty when none, or no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return [f for f in CPU_BF16_FLAGS if f in flags]


@dataclass
class Precision:
    """What the forward pass runs in, on which device, and why."""

    mode: str  # bf16 | fp16 | off
    device: torch.device
    reason: str
    tf32: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    @property
    def uses_scaler(self) -> bool:
        return self.mode == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mode == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is a no-op unless fp16 (its state is saved either way)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.uses_scaler)

    def describe(self) -> str:
        kind = {"bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler", "off": "fp32"}
        tf32 = ", TF32 matmuls on" if self.tf32 else ""
        return f"precision: {kind[self.mode]} on {self.device.type} ({self.reason}{tf32})"


def resolve_precision(
    amp: Any,
    device: torch.device,
    cpu_flags: list[str] | None = None,
    cuda_bf16: bool | None = None,
) -> Precision:
    """Decide the precision for ``device`` (``cpu_flags``/``cuda_bf16`` for tests)."""
    mode = normalize_amp(amp)
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        gpu = "this GPU supports bf16" if native else "this GPU has no native bf16"
        if mode == "auto":
            mode, why = ("bf16", f"amp auto: {gpu}") if native else ("fp16", f"amp auto: {gpu}")
        elif mode == "bf16" and not native:
            raise PrecisionError(
                "train_config.amp: bf16, but this GPU has no native bf16 "
                "(torch.cuda.is_bf16_supported() is False); use amp: fp16 or auto"
            )
        else:
            why = f"amp {mode}: {gpu}"
        return Precision(mode, device, why, tf32=True)
    flags = cpu_bf16_flags() if cpu_flags is None else cpu_flags
    native = bool(flags)
    cpu = f"CPU flags {'/'.join(flags)}" if native else "no avx512_bf16/amx_bf16 on this CPU"
    if mode == "fp16":
        raise PrecisionError(
            "train_config.amp: fp16 needs a CUDA device (loss scaling); on CPU use bf16, auto "
            "or off"
        )
    if mode == "auto":
        return Precision("bf16" if native else "off", device, f"amp auto: {cpu}")
    if mode == "bf16" and not native:
        return Precision("bf16", device, f"amp bf16 requested; {cpu}: emulated, slower than fp32")
    return Precision(mode, device, f"amp {mode}: {cpu}")


def apply_backend_flags(p: Precision) -> None:
    """TF32 for fp32 matmuls/convolutions on GPUs (a no-op on CPU)."""
    if p.device.type == "cuda" and p.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
