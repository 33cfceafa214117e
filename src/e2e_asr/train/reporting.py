"""What the trainer tells the user: log lines, TensorBoard, the per-epoch record, the plot.

Only rank 0 writes files. ``train_log.jsonl`` holds one record per finished epoch
(``{"epoch", "dev_loss", "dev_acc", "dev_cer", "train_loss", "lr", ...}``); averaging by
validation reads it. A re-run or resumed epoch replaces its earlier record instead of adding a
second one.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from e2e_asr.data.io import atomic_open, atomic_path

log = logging.getLogger("e2e_asr.train")

TRAIN_LOG = "train_log.jsonl"
PLOT_NAME = "train_curves.png"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record, so a handler made
    while stderr was redirected (pytest capture, a notebook) never writes to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - the logging.StreamHandler attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def close_logging() -> None:
    """Remove and close the handlers ``setup_logging`` added (end of a run)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_e2e_asr_train", False):
            root.removeHandler(h)
            h.close()


def setup_logging(is_main: bool, log_file: Path | None = None) -> None:
    """INFO on rank 0 (console and ``log_file``), warnings only on the other ranks."""
    close_logging()  # ours from an earlier run in this process
    root = logging.getLogger()
    rank = os.environ.get("RANK", "0")
    fmt = logging.Formatter(
        f"%(asctime)s | %(levelname)s | rank {rank} | %(message)s", "%Y-%m-%d %H:%M:%S"
    )
    console = _CurrentStderr()
    console.setFormatter(fmt)
    console._e2e_asr_train = True  # type: ignore[attr-defined]
    root.addHandler(console)
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    if is_main and log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(fmt)
        fh._e2e_asr_train = True  # type: ignore[attr-defined]
        root.addHandler(fh)


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = []
        for i, v in enumerate(d):
            out += flatten(v, f"{prefix}[{i}]")
        return out
    return [(prefix, d)]


def print_config(args: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Every argument and config value, one per line, before training starts."""
    log.info("----------- arguments -----------")
    for k, v in sorted(args.items()):
        log.info("%s: %s", k, v)
    log.info("----------- training config -----------")
    for k, v in flatten(cfg):
        log.info("%s: %s", k, v)
    log.info("----------------------------------------")


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))


def step_line(
    epoch: int,
    epochs: int,
    batch: int,
    n_batches: int,
    step: int,
    loss: float,
    ctc: float,
    att: float,
    acc: float,
    lr: float,
    fps: float,
    eta: float,
) -> str:
    return (
        f"epoch [{epoch}/{epochs}] step [{batch}/{n_batches}] update {step} "
        f"loss {loss:.4f} ctc {ctc:.4f} att {att:.4f} acc {acc:.4f} lr {lr:.3e} "
        f"frames/s {fps:.0f} eta {format_eta(eta)}"
    )


class Reporter:
    """TensorBoard scalars and the per-epoch jsonl record (rank 0 only)."""

    def __init__(self, exp_dir: Path, enabled: bool) -> None:
        self.exp_dir = exp_dir
        self.enabled = enabled
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(exp_dir / "tensorboard"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def epoch_record(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.exp_dir / TRAIN_LOG
        records = [r for r in read_train_log(path) if r.get("epoch") != record["epoch"]]
        records.append(record)
        records.sort(key=lambda r: r["epoch"])
        with atomic_open(path, "w") as fh:
            for r in records:
                fh.write(json.dumps(r, sort_keys=True) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None


def read_train_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not json ({exc.msg})") from exc
    return out


def plot_curves(exp_dir: Path) -> Path | None:
    """``train_curves.png``: train/dev loss, dev CER and lr per epoch (matplotlib Agg)."""
    records = read_train_log(exp_dir / TRAIN_LOG)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(ep, [r.get("train_loss") for r in records], "o-", label="train")
    axes[0].plot(ep, [r.get("dev_loss") for r in records], "s-", label="dev")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(ep, [r.get("dev_cer") for r in records], "o-", color="tab:red")
    axes[1].set_title("dev CER (%, CTC greedy)")
    axes[2].plot(ep, [r.get("lr") for r in records], "o-", color="tab:green")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = exp_dir / PLOT_NAME
    try:
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return out
