"""The stage-3 training run: fine-tune (or train) with exact resume, under torchrun or alone.

``run(args)`` reads the config once (``--set`` overrides applied) and hands it down; the
``Trainer`` composes the parts, each buildable and testable on its own:

* ``data.TrainData``: the json shards stage 2 recorded, read a shard at a time; epoch plans;
* ``setup.build_setup`` / ``prepare_model``: model from the base (or scratch), checks, freezing;
* ``optimizer`` / ``scheduler``: Adam and the LR schedule (``lr: auto`` from the base's peak);
* ``precision.Precision``: amp auto|bf16|fp16|off, autocast, GradScaler, TF32;
* ``resume``: fingerprint, rank 0's resume decision checked by every rank;
* ``step.StepRunner``: forward/backward, accumulation, clipping, update, OOM guard.

Per epoch the shards come in an order shuffled from (seed, epoch), each shard's batches (from
the seed's jconfig, see ``e2e_asr.data.batching``) shuffled too; every rank takes an equal share
of every shard, and every ``accum_grad`` batches make one optimizer update; ``step`` counts
those updates. A ``snapshot`` is written every ``snapshot_interval`` updates and
``checkpoint.N`` after every epoch, both resumable to the exact batch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from e2e_asr.cli import debug_enabled
from e2e_asr.data.loader import BatchDataset, DataError, make_loader
from e2e_asr.data.specaug import SpecAugment
from e2e_asr.model.checkpoint import CheckpointError, save_checkpoint
from e2e_asr.train import lora
from e2e_asr.train import resume as rs
from e2e_asr.train.compile import compile_blocks
from e2e_asr.train.config import apply_overrides, load_train_config
from e2e_asr.train.data import EpochPlan, TrainData
from e2e_asr.train.distributed import (
    DistInfo,
    all_reduce_sum,
    gather_objects,
    init_distributed,
    shutdown,
    sync_buffers,
)
from e2e_asr.train.errors import TrainError
from e2e_asr.train.optimizer import build_optimizer
from e2e_asr.train.precision import apply_backend_flags, resolve_precision
from e2e_asr.train.reporting import (
    Reporter,
    close_logging,
    log,
    plot_curves,
    print_config,
    setup_logging,
    step_line,
)
from e2e_asr.train.scheduler import (
    BARELY_MOVES,
    base_lr_summary,
    build_schedule,
    resolve_auto_lr,
    run_peak_lr,
)
from e2e_asr.train.setup import build_setup, prepare_model
from e2e_asr.train.step import StepRunner, batch_setting
from e2e_asr.train.validation import validate

__all__ = ["TrainArgs", "TrainError", "Trainer", "load_config", "run"]


@dataclass
class TrainArgs:
    config: Path
    json_dir: Path
    exp_dir: Path
    epochs: int
    json_nj: int | None = None  # None: the shards stage 2 recorded
    base_model: Path | None = None
    units: Path | None = None
    cmvn: Path | None = None
    feature_config: Path | None = None
    mix_json_dir: Path | None = None
    mix_ratio: float = 0.0
    resume: str = "auto"
    device: str = "auto"
    seed: int | None = None
    max_steps: int = 0
    overrides: list[str] = field(default_factory=list)


def load_config(args: TrainArgs) -> dict[str, Any]:
    """The training config with every ``--set`` override (and ``--seed``) applied, once."""
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train_config.seed={args.seed}")
    cfg = load_train_config(args.config)
    return apply_overrides(cfg, overrides) if overrides else cfg


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DDP) else model


class Trainer:
    def __init__(self, args: TrainArgs, cfg: dict[str, Any], info: DistInfo) -> None:
        self.args = args
        self.info = info
        self.exp_dir = args.exp_dir
        self.seed = int(cfg["train_config"]["seed"])
        rs.seed_everything(self.seed)  # same initial weights on every rank (scratch runs)

        self.data = TrainData(args.json_dir, args.json_nj, args.mix_json_dir, args.mix_ratio)
        self.setup = build_setup(
            cfg,
            args.json_dir,
            self.data.dim,
            args.base_model,
            args.units,
            args.cmvn,
            args.feature_config,
        )
        self.cfg = self.setup.config
        self.tc = self.cfg["train_config"]
        opti, note = resolve_auto_lr(self.cfg["opti_config"], self.setup.base_opti_config)
        if note:
            log.info(note)
        self.cfg["opti_config"] = opti
        self.units = self.setup.units
        self.data.check_token_ids(len(self.units))
        self.model, self.frozen = prepare_model(self.setup, info.device)
        self.optimizer = build_optimizer(self.model, opti, self.tc["lr_scales"])
        sched_start = 0 if self.tc["noam_restart"] else self.setup.base_step
        self.schedule = build_schedule(self.optimizer, opti, sched_start)
        self.precision = resolve_precision(self.tc["amp"], info.device)
        apply_backend_flags(self.precision)
        log.info(self.precision.describe())
        self.scaler = self.precision.make_scaler()
        self.runner = StepRunner(
            self.model,
            self.optimizer,
            self.schedule,
            self.precision,
            self.scaler,
            self.tc["grad_clip"],
            step=self.setup.base_step,
        )
        self.specaug = SpecAugment(self.cfg["trans_config"])
        self.fingerprint = rs.run_fingerprint(
            self.cfg, self.data.identity(), self._base_identity(), self.data.mix_identity()
        )
        self.data.clean(
            self.cfg["jconfig"],
            self.cfg["valid_config"]["jconfig"],
            self.model.subsampling_rate,
            self.seed,
        )

        self.start_epoch = self.setup.base_epoch + 1
        self.start_batch = 0
        self.resumed_state: dict[str, Any] | None = None
        self.resumed_sums: list[float] | None = None
        self.validation: dict[str, float] = {}
        self._drop_partial_files()
        path, payload = rs.agree_on_resume(info, self.exp_dir, args.resume, self.fingerprint)
        if payload is not None and path is not None:
            self._restore(path, payload)
        # a finished run found by --resume: re-running the stage is a no-op, not an error
        self.finished = (
            self.resumed_state is not None
            and bool(self.resumed_state["done"])
            and args.epochs == self.start_epoch - 1
        )
        if args.epochs < self.start_epoch and not self.finished:
            raise TrainError(
                f"nothing to train: --epochs {args.epochs} but the run is already at epoch "
                f"{self.start_epoch - 1} (base model or resumed state); raise --epochs"
            )
        # per-rank dropout streams, set after resume so they do not override restored states
        if self.resumed_state is None:
            rs.seed_everything(self.seed * 1000 + info.rank)

        if self.tc["compile"]:
            n = compile_blocks(self.model)
            log.info("train_config.compile: %d blocks compiled (first steps are slow)", n)
        if not self.finished and self._probe_wanted():
            self._probe()
        self.ddp: torch.nn.Module = self.model
        if info.distributed:
            rate = float(self.cfg["criterion_config"]["rate"])
            self.ddp = DDP(
                self.model,
                device_ids=[info.device] if info.device.type == "cuda" else None,
                # with rate 0 or 1 the model skips CTC or the decoder entirely
                find_unused_parameters=rate in (0.0, 1.0),
                # positional tables and CMVN are constants; BatchNorm statistics are made
                # equal before validation and checkpoints (sync_buffers)
                broadcast_buffers=False,
            )
            self.runner.wrap(self.ddp)
        self.reporter = Reporter(self.exp_dir, info.is_main)

    @property
    def step(self) -> int:
        return self.runner.step

    # ----------------------------------------------------------------- setup helpers
    def _base_identity(self) -> dict[str, Any] | None:
        a = self.args
        if a.base_model is not None:
            return {
                **(rs.file_identity(a.base_model) or {}),
                "epoch": self.setup.base_epoch,
                "step": self.setup.base_step,
            }
        return {"scratch": [rs.file_identity(p) for p in (a.units, a.cmvn, a.feature_config)]}

    def _drop_partial_files(self) -> None:
        """Temp files of checkpoints whose writing was killed: never trusted, but as large as
        a checkpoint; remove them instead of letting every killed run add one."""
        if not (self.info.is_main and self.exp_dir.is_dir()):
            return
        names = (".checkpoint.*.tmp", f".{rs.SNAPSHOT_NAME}.*.tmp")
        for p in [p for pattern in names for p in self.exp_dir.glob(pattern)]:
            log.info("removing %s (left by a run killed while writing it)", p)
            p.unlink(missing_ok=True)

    def _restore(self, path: Path, payload: dict[str, Any]) -> None:
        ts = payload["train_state"]
        if not ts["done"] and int(ts.get("world_size", 1)) != self.info.world_size:
            raise TrainError(
                f"{path}: mid-epoch state of {ts.get('world_size')} processes; resume it with "
                f"the same number of processes, or from a checkpoint.N"
            )
        try:
            if lora.enabled(self.tc["lora"]):
                lora.load_lora_payload(self.model, payload, str(path))
            else:
                self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.schedule.load_state_dict(payload["scheduler"])
            if payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:  # LoraError is a ValueError
            raise TrainError(f"{path}: does not fit this run's model/optimizer: {exc}") from exc
        self.runner.step = int(payload["step"])
        rngs = payload.get("rng") or []
        if len(rngs) == self.info.world_size:
            for note in rs.restore_rng(rngs[self.info.rank]):
                log.warning("resume: %s", note)
        else:
            rs.seed_everything(self.seed * 1000 + self.info.rank + self.step)
        self.validation = dict(payload.get("validation") or {})
        self.resumed_state = ts
        sums = ts.get("loss_sums") or [0.0, 0.0]
        if sums and isinstance(sums[0], list | tuple):  # one pair per rank
            mine = sums[self.info.rank] if self.info.rank < len(sums) else [0.0, 0.0]
        else:  # older states: rank 0's pair only
            mine = sums if self.info.is_main else [0.0, 0.0]
        self.resumed_sums = [float(v) for v in mine]
        if ts["done"]:
            self.start_epoch, self.start_batch = int(ts["epoch"]) + 1, 0
        else:
            self.start_epoch, self.start_batch = int(ts["epoch"]), int(ts["batch"])
        log.info(
            "resuming from %s: update %d, epoch %d, batch %d",
            path,
            self.step,
            self.start_epoch,
            self.start_batch,
        )

    def _probe_wanted(self) -> bool:
        want = self.tc["oom_probe"]
        return want is True or (want == "auto" and self.info.device.type == "cuda")

    def _probe(self) -> None:
        """Forward + backward of the epoch's largest batches (most padded frames, longest
        padded length) before the first step: an OOM surfaces now, naming the batch."""
        plan = self.data.epoch_plan(self.start_epoch)
        advice = batch_setting(self.cfg["jconfig"])
        for shard, b in plan.largest:
            seg = self.data.segment(plan, plan.order.index(shard))
            ds = BatchDataset(seg.entries, [seg.batches[b]])
            where = f"epoch {self.start_epoch}, batch {b + 1} of {self.data.shards[shard].name}"
            log.info("start-up probe, %s: %s", where, self.runner.probe(ds[0], where, advice))
            ds.close()
            seg.close()

    # ----------------------------------------------------------------- checkpoints
    def _payload(self, epoch_done: int, ts: dict[str, Any]) -> dict[str, Any]:
        # collectives (every rank calls this): RNG states and loss sums of every rank
        rngs = gather_objects(rs.capture_rng(), self.info)
        ts = {**ts, "loss_sums": gather_objects(self.runner.epoch_sums.tolist(), self.info)}
        sync_buffers(self.model, self.info)
        return {
            **self._model_state(),
            "config": self.cfg,
            "units": self.units,
            "feature_config": self.setup.feature_config,
            "epoch": epoch_done,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.precision.uses_scaler else {},
            "rng": rngs,
            "train_state": ts,
            "validation": self.validation,
        }

    def _model_state(self) -> dict[str, Any]:
        """``model``: plain weights; for a LoRA run merged (W + scale * B A), with the adapters
        and the unmerged weights in ``lora`` for resuming (see ``e2e_asr.train.lora``)."""
        if not lora.enabled(self.tc["lora"]):
            return {"model": self.model.state_dict()}
        merged, entry = lora.lora_payload(self.model, self.tc["lora"])
        return {"model": merged, "lora": entry}

    def _train_state(
        self, epoch: int, batch: int, done: bool, order: list[list[int]]
    ) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "batch": batch,
            "done": done,
            "order": order,
            "fingerprint": self.fingerprint,
            "world_size": self.info.world_size,
            "base_model": self.setup.base_path,
        }

    def _save(self, name: str, payload: dict[str, Any]) -> None:
        if self.info.is_main:
            save_checkpoint(self.exp_dir / name, payload)

    # ----------------------------------------------------------------- training
    def _report_lr(self, per_rank: int) -> None:
        accum = int(self.tc["accum_grad"])
        planned = (self.args.epochs - self.start_epoch + 1) * -(-per_rank // accum)
        start_lr = self.schedule.current_lr()
        peak = run_peak_lr(self.schedule, planned)
        opti = self.cfg["opti_config"]
        line = (
            f"LR: this run starts at {start_lr:.3e} ({opti['name']} schedule at update "
            f"{self.schedule.step_count + 1}) and reaches at most {peak:.3e} over its "
            f"{planned} planned updates"
        )
        base = base_lr_summary(self.setup.base_opti_config, self.setup.base_step)
        if base is None:
            log.info(line)
            return
        base_last, base_peak = base
        log.info(
            "%s; the base model ended at %.3e (its own schedule at update %d, peak %.3e)",
            line,
            base_last,
            self.setup.base_step,
            base_peak,
        )
        if peak < base_peak / BARELY_MOVES:
            log.warning(
                "LR: fine-tuning would barely move the model: its highest LR %.3e is below "
                "1/%d of the base model's peak %.3e. Use conf/finetune.yaml's schedule "
                "(warmup_decay, lr: auto), or raise opti_config.factor / opti_config.lr, or set "
                "train_config.noam_restart: true",
                peak,
                int(BARELY_MOVES),
                base_peak,
            )

    def fit(self) -> None:
        a, info = self.args, self.info
        if self.finished:
            log.info("%s already holds checkpoint.%d; nothing to do", self.exp_dir, a.epochs)
            self.reporter.close()
            return
        # every rank starts from the same update, position and run, or none starts
        rs.verify_start(info, self.step, self.start_epoch, self.start_batch, self.fingerprint)
        accum = int(self.tc["accum_grad"])
        log_every = max(1, int(self.tc["log_interval"]))
        snap_every = int(self.tc["snapshot_interval"])
        advice = batch_setting(self.cfg["jconfig"])
        runner = self.runner
        updates_this_run = 0
        t_start = time.time()
        batches_done_run = 0
        reported = False
        log.info(
            "training epochs %d..%d from update %d (lr %.3e), %d train / %d dev utterances, "
            "%d frozen parameter tensors",
            self.start_epoch,
            a.epochs,
            self.step,
            self.schedule.current_lr(),
            self.data.n_train,
            len(self.data.dev_keys),
            len(self.frozen),
        )
        for epoch in range(self.start_epoch, a.epochs + 1):
            plan = self.data.epoch_plan(epoch)
            counts = plan.rank_counts(info.rank, info.world_size, self.tc["ddp_pad"])
            n = sum(counts)
            if not reported:
                self._report_lr(n)
                reported = True
            order = plan.state()
            start = 0
            runner.epoch_sums.zero_()
            if self.resumed_state is not None and epoch == self.start_epoch and self.start_batch:
                if self.resumed_state.get("order") != order:
                    raise TrainError(
                        "resume: the batch order of this epoch differs from the saved one "
                        "(data or jconfig changed); resume from a checkpoint.N instead"
                    )
                start = self.start_batch
                sums = torch.tensor(self.resumed_sums or [0.0, 0.0], dtype=torch.float64)
                runner.epoch_sums.copy_(sums)
            if n == 0:
                raise DataError(f"epoch {epoch}: no training batches for rank {info.rank}")
            loader = self._epoch_batches(plan, counts, start)
            bar = self._bar(n, start, epoch)
            t_window = time.time()
            runner.take_window()
            self.ddp.train()
            self.optimizer.zero_grad(set_to_none=True)
            for k, batch in loader:
                group_start = k - k % accum
                group = min(accum, n - group_start)
                last_in_group = k - group_start == group - 1
                where = f"epoch {epoch}, batch {k + 1} of {n} (rank {info.rank})"
                runner.train_batch(batch, group, last_in_group, where, advice)
                batches_done_run += 1
                if bar is not None:
                    bar.update(1)
                if not last_in_group:
                    continue
                if not runner.update():
                    continue
                updates_this_run += 1
                if self.step % log_every == 0:
                    self._log_window(epoch, k + 1, n, t_window, t_start, batches_done_run)
                    t_window = time.time()
                stop = a.max_steps > 0 and updates_this_run >= a.max_steps
                if (snap_every > 0 and self.step % snap_every == 0) or stop:
                    ts = self._train_state(epoch, k + 1, False, order)
                    self._save(rs.SNAPSHOT_NAME, self._payload(epoch - 1, ts))
                if stop:
                    log.info(
                        "--max-steps %d reached at update %d; snapshot written",
                        a.max_steps,
                        self.step,
                    )
                    if bar is not None:
                        bar.close()
                    self.reporter.close()
                    return
            if bar is not None:
                bar.close()
            self._end_epoch(epoch, order, n)
        self.data.close()
        self.reporter.close()
        if info.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(info.device) / 2**30
            log.info("peak GPU memory %.2f GiB (rank %d)", peak, info.rank)
        if info.is_main:
            png = plot_curves(self.exp_dir)
            log.info("training done; curves in %s", png)

    def _workers(self) -> int:
        return int(self.tc["num_workers"])

    def _epoch_batches(
        self, plan: EpochPlan, counts: list[int], start: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(position, batch)`` of this rank's batches of the epoch from position ``start``:
        the shards in the plan's order, one loaded at a time; shards wholly before ``start``
        are skipped without reading them."""
        info = self.info
        first = 0
        for j, c in enumerate(counts):
            if first + c <= start:
                first += c
                continue
            skip = max(0, start - first)
            seg = self.data.segment(plan, j)
            mine = seg.for_rank(info.rank, info.world_size, self.tc["ddp_pad"])
            ds = BatchDataset(
                seg.entries,
                mine[skip:],
                self.specaug,
                rng_key=(self.seed, plan.epoch, info.rank),
                positions=list(range(first + skip, first + c)),
            )
            try:
                loader = make_loader(ds, self._workers(), info.device.type == "cuda")
                yield from enumerate(loader, start=first + skip)
            finally:
                ds.close()
                seg.close()
            first += c

    def _log_window(
        self, epoch: int, batch: int, n: int, t0: float, t_start: float, done: int
    ) -> None:
        w = all_reduce_sum(self.runner.take_window(), self.info)
        nb = max(w[4], 1.0)
        elapsed = max(time.time() - t0, 1e-9)
        per_batch = (time.time() - t_start) / max(done, 1)
        remaining = (n - batch) + (self.args.epochs - epoch) * n
        lr = self.schedule.lr_at(self.schedule.step_count)
        line = step_line(
            epoch,
            self.args.epochs,
            batch,
            n,
            self.step,
            w[0] / nb,
            w[1] / nb,
            w[2] / nb,
            w[3] / nb,
            lr,
            w[5] / elapsed,
            remaining * per_batch,
        )
        log.info(line)
        self.reporter.scalars(
            {
                "train/loss": w[0] / nb,
                "train/loss_ctc": w[1] / nb,
                "train/loss_att": w[2] / nb,
                "train/acc": w[3] / nb,
                "train/lr": lr,
                "train/frames_per_s": w[5] / elapsed,
            },
            self.step,
        )

    def _dev_loader(self):
        batches = self.data.dev_batches()
        # disjoint shares, no padding: nothing is scored twice, and no collective runs inside
        mine = list(range(len(batches)))[self.info.rank :: self.info.world_size]
        ds = BatchDataset(self.data.dev_entries, [batches[i] for i in mine])
        return make_loader(ds, self._workers())

    def _end_epoch(self, epoch: int, order: list[list[int]], n: int) -> None:
        total = all_reduce_sum(self.runner.epoch_sums.tolist(), self.info)
        train_loss = total[0] / max(total[1], 1.0)
        sync_buffers(self.model, self.info)
        if self.data.dev_keys:
            self.validation = validate(
                self.model,
                self._dev_loader(),
                self.units,
                self.info,
                bool(self.tc["dev_cer"]),
            )
        else:
            self.validation = {
                "dev_loss": float("nan"),
                "dev_acc": float("nan"),
                "dev_cer": float("nan"),
            }
        lr = self.schedule.lr_at(max(self.schedule.step_count, 1))
        record = {
            "epoch": epoch,
            "step": self.step,
            "train_loss": train_loss,
            "lr": lr,
            **{k: float(v) for k, v in self.validation.items()},
        }
        log.info(
            "epoch %d done: train loss %.4f, dev loss %.4f, dev acc %.4f, dev CER %.2f%%, lr %.3e",
            epoch,
            train_loss,
            self.validation["dev_loss"],
            self.validation["dev_acc"],
            self.validation["dev_cer"],
            lr,
        )
        ts = self._train_state(epoch, n, True, order)
        self._save(f"checkpoint.{epoch}", self._payload(epoch, ts))
        self.reporter.epoch_record(record)
        self.reporter.scalars(
            {
                "epoch/train_loss": train_loss,
                "epoch/dev_loss": self.validation["dev_loss"],
                "epoch/dev_acc": self.validation["dev_acc"],
                "epoch/dev_cer": self.validation["dev_cer"],
            },
            epoch,
        )
        if self.info.is_main:
            # the snapshot is older than this checkpoint now; drop it so auto-resume is simple
            (self.exp_dir / rs.SNAPSHOT_NAME).unlink(missing_ok=True)
            for p in rs.prune_checkpoints(self.exp_dir, int(self.tc["keep_last"])):
                log.info("removed %s (keep_last %d)", p, self.tc["keep_last"])

    def _bar(self, n: int, start: int, epoch: int):
        if not (self.info.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=n, initial=start, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def run(args: TrainArgs) -> int:
    """Run stage 3; returns the process exit code. Errors on any rank exit non-zero with a
    message naming the rank, so torchrun stops the others instead of leaving them waiting.
    Ctrl-C ends in one line that says how to resume (exit 130)."""
    args.exp_dir.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0") or 0)
    setup_logging(rank == 0, args.exp_dir / "train.log")
    info: DistInfo | None = None
    failed = True
    try:
        cfg = load_config(args)  # the one read of the yaml; every part gets this dict
        info = init_distributed(args.device, float(cfg["train_config"]["ddp_timeout"]))
        trainer = Trainer(args, cfg, info)
        print_config(
            {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()},
                "world_size": info.world_size,
                "device": str(info.device),
            },
            trainer.cfg,
        )
        trainer.fit()
        failed = False
    except KeyboardInterrupt:
        log.error(
            "rank %d: interrupted; re-run the same command to resume from the newest "
            "snapshot/checkpoint in %s",
            rank,
            args.exp_dir,
        )
        return 130
    except Exception as exc:
        log.error("rank %d failed: %s: %s", rank, type(exc).__name__, exc)
        user_error = isinstance(exc, (TrainError, DataError, ValueError, CheckpointError))
        if debug_enabled() or not user_error:  # a user's error: its traceback only if asked
            log.exception("traceback of rank %d", rank)
        return 1
    finally:
        if info is not None:
            with contextlib.suppress(Exception):
                shutdown(info, failed)
        close_logging()
    return 0
