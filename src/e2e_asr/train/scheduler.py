"""Learning-rate schedules driven by the number of optimizer updates.

``step`` always counts optimizer updates (one per ``accum_grad`` batches), never batches, so a
resumed run or a different ``accum_grad`` lands on the same learning rate for the same update.
The schedule object owns that counter and saves it; restoring it restores the LR exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class LRSchedule:
    """Base: sets ``lr = base_lr(step) * group['lr_scale']`` on every param group."""

    kind = "base"

    def __init__(self, optimizer: torch.optim.Optimizer, step: int = 0) -> None:
        if step < 0:
            raise ValueError(f"scheduler step must be >= 0, got {step}")
        self.optimizer = optimizer
        self.step_count = int(step)
        self._apply()

    def lr_at(self, step: int) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def current_lr(self) -> float:
        """LR the next update will use (the update numbered ``step_count + 1``)."""
        return self.lr_at(self.step_count + 1)

    def _apply(self) -> None:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        """Call after each ``optimizer.step()``: prepares the LR of the following update."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(
                f"scheduler state is for {state.get('kind')!r}, this run uses {self.kind!r}"
            )
        self.step_count = int(state["step"])
        self._apply()


class NoamSchedule(LRSchedule):
    """``factor * model_size^-0.5 * min(step^-0.5, step * warm_step^-1.5)`` (Vaswani et al.)."""

    kind = "noam"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: float,
        warm_step: int,
        model_size: int,
        step: int = 0,
    ) -> None:
        self.factor = float(factor)
        self.warm_step = int(warm_step)
        self.model_size = int(model_size)
        super().__init__(optimizer, step)

    def lr_at(self, step: int) -> float:
        step = max(step, 1)
        return self.factor * self.model_size**-0.5 * min(step**-0.5, step * self.warm_step**-1.5)


class WarmupDecaySchedule(LRSchedule):
    """Linear warmup to ``lr`` over ``warm_step`` updates, then a decay.

    ``inverse_sqrt``: ``lr * sqrt(warm_step / step)``; ``linear``: down to ``final_lr`` over
    ``decay_steps`` updates after the warmup, then constant; ``constant``: stays at ``lr``.
    """

    kind = "warmup_decay"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr: float,
        warm_step: int,
        decay: str = "inverse_sqrt",
        decay_steps: int = 0,
        final_lr: float = 0.0,
        step: int = 0,
    ) -> None:
        self.peak = float(lr)
        self.warm_step = int(warm_step)
        self.decay = decay
        self.decay_steps = int(decay_steps)
        self.final_lr = float(final_lr)
        super().__init__(optimizer, step)

    def lr_at(self, step: int) -> float:
        step = max(step, 1)
        if self.warm_step > 0 and step <= self.warm_step:
            return self.peak * step / self.warm_step
        if self.decay == "constant":
            return self.peak
        if self.decay == "inverse_sqrt":
            return self.peak * math.sqrt(max(self.warm_step, 1) / step)
        done = min(1.0, (step - self.warm_step) / self.decay_steps)
        return self.peak + (self.final_lr - self.peak) * done


def build_schedule(
    optimizer: torch.optim.Optimizer, opti_config: dict[str, Any], step: int = 0
) -> LRSchedule:
    """The schedule named by ``opti_config['name']`` starting after ``step`` updates."""
    name = opti_config["name"]
    if name == "noam":
        return NoamSchedule(
            optimizer,
            opti_config["factor"],
            opti_config["warm_step"],
            opti_config["model_size"],
            step=step,
        )
    if name == "warmup_decay":
        if opti_config["lr"] == "auto":
            raise ValueError(
                "opti_config.lr: auto is resolved against the base model first "
                "(scheduler.resolve_auto_lr)"
            )
        return WarmupDecaySchedule(
            optimizer,
            opti_config["lr"],
            opti_config["warm_step"],
            opti_config["decay"],
            opti_config["decay_steps"],
            opti_config["final_lr"],
            step=step,
        )
    raise ValueError(f"opti_config.name {name!r}: no such schedule")


# ----------------------------------------------------------------------------- fine-tuning LR
AUTO_LR_FRACTION = 0.5  # opti_config.lr: auto = this fraction of the base model's peak LR
AUTO_LR_FALLBACK = 1e-3  # ... when the base records no schedule (or training from scratch)
BARELY_MOVES = 50.0  # warn when this run's highest LR is below base peak / this


def peak_lr(opti_config: dict[str, Any]) -> float:
    """The highest LR a schedule reaches (Noam: at ``warm_step``; warmup_decay: ``lr``)."""
    if opti_config.get("name") == "noam":
        return (
            float(opti_config["factor"])
            * int(opti_config["model_size"]) ** -0.5
            * int(opti_config["warm_step"]) ** -0.5
        )
    return float(opti_config["lr"])


def resolve_auto_lr(
    opti_config: dict[str, Any], base_opti: dict[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
    """``lr: auto`` made a number: ``AUTO_LR_FRACTION`` x the base's peak LR. Returns the
    config (a copy when changed) and a note saying how the LR was derived."""
    if opti_config.get("lr") != "auto":
        return opti_config, None
    out = dict(opti_config)
    if base_opti and base_opti.get("lr") != "auto":
        try:
            base_peak = peak_lr(base_opti)
        except (KeyError, TypeError, ValueError):
            base_peak = 0.0
        if base_peak > 0:
            out["lr"] = AUTO_LR_FRACTION * base_peak
            return out, (
                f"opti_config.lr: auto = {AUTO_LR_FRACTION:g} x the base model's peak LR "
                f"{base_peak:.3e} ({base_opti.get('name')}) = {out['lr']:.3e}"
            )
    out["lr"] = AUTO_LR_FALLBACK
    return out, (
        f"opti_config.lr: auto: no base schedule to derive it from; using {AUTO_LR_FALLBACK:g}"
    )


def base_lr_summary(base_opti: dict[str, Any] | None, base_step: int) -> tuple[float, float] | None:
    """``(last LR, peak LR)`` of the base model's own schedule at its last update."""
    if not base_opti or base_opti.get("lr") == "auto":
        return None
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    try:
        sched = build_schedule(opt, base_opti, 0)
        return sched.lr_at(max(base_step, 1)), peak_lr(base_opti)
    except (KeyError, TypeError, ValueError):
        return None


def run_peak_lr(schedule: LRSchedule, updates: int) -> float:
    """The highest LR ``schedule`` uses over its next ``updates`` updates."""
    start = schedule.step_count + 1
    n = max(int(updates), 1)
    stride = max(1, n // 2000)
    steps = list(range(start, start + n, stride)) + [start + n - 1]
    if isinstance(schedule, NoamSchedule | WarmupDecaySchedule):
        w = schedule.warm_step
        if start <= w < start + n:
            steps.append(w)
    return max(schedule.lr_at(s) for s in steps)
