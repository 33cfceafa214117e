"""One training batch and one optimizer update: ``StepRunner``.

Per batch: forward under the run's autocast (``precision.py``), the loss divided by the size
of its ``accum_grad`` group, backward (DDP's gradient all-reduce only on the group's last
batch, ``no_sync`` before). Per group: unscale (fp16), clip, a skipped update when the
gradient norm is not finite (every rank sees the same all-reduced norm and skips alike),
optimizer step, schedule step. ``step`` counts updates, never batches.

Host syncs: the losses stay on the device (``window`` and ``epoch_sums`` are device tensors,
read by the trainer every ``log_interval`` updates and at the end of an epoch); the only
per-update sync is the finiteness check of the gradient norm (plus GradScaler's own with fp16).

Out of memory: an ``OutOfMemoryError`` in a batch is re-raised as a ``TrainError`` that names
the batch (position, keys, padded size), the setting that sizes batches, and how to get past
it; ``probe`` runs the largest batch once before training (forward + backward, nothing kept)
so that a batch that cannot fit fails in seconds, not hours into an epoch.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from e2e_asr.train.errors import TrainError
from e2e_asr.train.precision import Precision

log = logging.getLogger("e2e_asr.train")

# window slots (device tensor): loss, ctc loss, attention loss, accuracy, batches
WINDOW = 5


def batch_setting(jconfig: dict[str, Any]) -> str:
    """The jconfig key that sizes batches, with its value."""
    count = jconfig.get("count", "seq")
    if count == "auto":
        count = "seq" if jconfig.get("batch_size", 0) > 0 else "bin"
    if count == "seq":
        return f"jconfig.batch_size (now {jconfig.get('batch_size')})"
    if count == "bin":
        return f"jconfig.batch_bins (now {jconfig.get('batch_bins')})"
    keys = [k for k in ("batch_frames_in", "batch_frames_out", "batch_frames_inout")
            if jconfig.get(k, 0) > 0]  # fmt: skip
    return " / ".join(f"jconfig.{k} (now {jconfig[k]})" for k in keys) or "jconfig.batch_frames_in"


def describe_batch(batch: dict[str, Any], limit: int = 4) -> str:
    keys = list(batch.get("keys") or [])
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
    b, t = int(batch["feats"].shape[0]), int(batch["feats"].shape[1])
    return f"{b} utterances x {t} padded frames; keys {shown}"


class StepRunner:
    """Forward/backward of batches and optimizer updates for one model."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        precision: Precision,
        scaler: torch.amp.GradScaler,
        grad_clip: float,
        step: int = 0,
        ddp: nn.Module | None = None,
    ) -> None:
        self.model = model  # unwrapped
        self.ddp = ddp if ddp is not None else model  # what the forward goes through
        self.optimizer = optimizer
        self.schedule = schedule
        self.precision = precision
        self.scaler = scaler
        self.grad_clip = float(grad_clip)
        self.step = int(step)
        self.device = precision.device
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.window = torch.zeros(WINDOW, dtype=torch.float64, device=self.device)
        self.epoch_sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.frames = 0  # input frames since the last log line (host side, from the batch)

    def wrap(self, ddp: nn.Module) -> None:
        """Forward through ``ddp`` from now on (after the start-up probe)."""
        self.ddp = ddp

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = batch["feats"].to(self.device, non_blocking=True)
        lens = batch["feat_lens"].to(self.device, non_blocking=True)
        ys = batch["ys"].to(self.device, non_blocking=True)
        return feats, lens, ys

    def train_batch(
        self, batch: dict[str, Any], group: int, last_in_group: bool, where: str, advice: str
    ) -> None:
        """Forward + backward of one batch of an ``accum_grad`` group of ``group`` batches."""
        feats, lens, ys = self._inputs(batch)
        sync = contextlib.nullcontext()
        if self.ddp is not self.model and not last_in_group:
            sync = self.ddp.no_sync()
        try:
            with sync:
                with self.precision.autocast():
                    out = self.ddp(feats, lens, ys)
                # the group's gradient is the mean over its batches
                self.scaler.scale(out["loss"] / group).backward()
        except torch.OutOfMemoryError as exc:
            raise TrainError(
                f"out of memory in {where} ({describe_batch(batch)}). Batch order is fixed, so "
                f"re-running meets this batch again: lower {advice} or drop long utterances "
                "(jconfig.ilen_max), then continue with --resume EXP/checkpoint.N (the newest "
                "epoch checkpoint; a new batching cannot continue a mid-epoch snapshot)"
            ) from exc
        with torch.no_grad():
            loss = out["loss"].detach().double()
            self.window += torch.stack(
                [
                    loss,
                    out["loss_ctc"].detach().double(),
                    out["loss_att"].detach().double(),
                    out["acc"].detach().double(),
                    torch.ones((), dtype=torch.float64, device=loss.device),
                ]
            )
            self.epoch_sums[0] += loss * feats.shape[0]
            self.epoch_sums[1] += feats.shape[0]
        self.frames += int(batch["feat_lens"].sum())

    def update(self) -> bool:
        """Clip, step, schedule. False when the update was skipped (non-finite gradients)."""
        self.scaler.unscale_(self.optimizer)
        clip = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip)
        # DDP has averaged the gradients, so every rank sees the same norm and skips alike
        ok = bool(torch.isfinite(norm))
        if self.precision.uses_scaler:
            self.scaler.step(self.optimizer)  # skips the step itself on inf/nan
            self.scaler.update()
        elif ok:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not ok:
            log.warning("update skipped: gradient norm %s is not finite", float(norm))
            return False
        self.step += 1
        self.schedule.step()
        return True

    def take_window(self) -> list[float]:
        """The window's sums (one host sync) and frames; resets both."""
        w = self.window.tolist() + [float(self.frames)]
        self.window.zero_()
        self.frames = 0
        return w

    def probe(self, batch: dict[str, Any], where: str, advice: str) -> str:
        """Forward + backward of ``batch`` that leaves no trace (RNG streams, BatchNorm
        statistics, gradients as before); ``TrainError`` naming the batch on out-of-memory."""
        feats, lens, ys = self._inputs(batch)
        state = self.model.state_dict()
        kept = {k: v.clone() for k, v in state.items()
                if "running_" in k or k.endswith("num_batches_tracked")}  # fmt: skip
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with torch.random.fork_rng(devices=[self.device] if cuda else []):
                with self.precision.autocast():
                    out = self.model(feats, lens, ys)
                out["loss"].backward()
                del out
        except torch.OutOfMemoryError as exc:
            raise TrainError(
                f"out of memory in the start-up probe: forward + backward of {where} "
                f"({describe_batch(batch)}) does not fit on {self.device}. Lower {advice}, or "
                "drop long utterances with jconfig.ilen_max, then re-run"
            ) from exc
        finally:
            self.model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for k, v in kept.items():
                    state[k].copy_(v)
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.device) / 2**30
            return f"{describe_batch(batch)}: fits, peak GPU memory {peak:.2f} GiB"
        return f"{describe_batch(batch)}: fits"
