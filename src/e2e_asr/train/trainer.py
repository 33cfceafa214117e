"""The stage-3 training run: fine-tune (or train) with exact resume, under torchrun or alone.

One ``run(args)`` call does the whole stage: read config and data, build/check the model,
restore a resumable state if asked, then train epoch by epoch. Per epoch the batches (from the
seed's jconfig, see ``e2e_asr.data.batching``) are shuffled from (seed, epoch), every rank takes
an equal share, and every ``accum_grad`` batches make one optimizer update; ``step`` counts
those updates. A ``snapshot`` is written every ``snapshot_interval`` updates and
``checkpoint.N`` after every epoch, both resumable to the exact batch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from e2e_asr.data.batching import clean_data, epoch_order, make_batchset, shard_for_rank
from e2e_asr.data.loader import BatchDataset, DataError, feat_dim, make_loader, token_ids
from e2e_asr.data.specaug import SpecAugment
from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from e2e_asr.train import state as st
from e2e_asr.train.compat import ModelSetup, setup_from_base, setup_from_scratch
from e2e_asr.train.compile import compile_blocks
from e2e_asr.train.config import apply_overrides, load_train_config
from e2e_asr.train.data import draw_source, read_dev_json, read_source_jsons, read_train_jsons
from e2e_asr.train.distributed import (
    DistInfo,
    all_reduce_sum,
    gather_objects,
    init_distributed,
    shutdown,
)
from e2e_asr.train.optimizer import apply_freeze, build_optimizer
from e2e_asr.train.reporting import (
    Reporter,
    close_logging,
    log,
    plot_curves,
    print_config,
    setup_logging,
    step_line,
)
from e2e_asr.train.scheduler import build_schedule
from e2e_asr.train.validation import validate

FAULT_ENV = "E2E_ASR_FAULT"  # tests: "step=K" or "step=K,rank=R" raises after update K


@dataclass
class TrainArgs:
    config: Path
    json_dir: Path
    exp_dir: Path
    epochs: int
    json_nj: int = 1
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


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


def _fault_at() -> tuple[int, int | None] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    parts = dict(p.split("=", 1) for p in spec.split(","))
    return int(parts["step"]), (int(parts["rank"]) if "rank" in parts else None)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DDP) else model


class Trainer:
    def __init__(self, args: TrainArgs, info: DistInfo) -> None:
        self.args = args
        self.info = info
        self.exp_dir = args.exp_dir
        cfg = load_train_config(args.config)
        overrides = list(args.overrides)
        if args.seed is not None:
            overrides.append(f"train_config.seed={args.seed}")
        self.cfg = apply_overrides(cfg, overrides) if overrides else cfg
        self.tc = self.cfg["train_config"]
        self.seed = int(self.tc["seed"])
        st.seed_everything(self.seed)  # same initial weights on every rank (scratch runs)

        self.train_utts = read_train_jsons(args.json_dir, args.json_nj)
        self.dev_utts = read_dev_json(args.json_dir)
        self.dim = feat_dim(self.train_utts, f"{args.json_dir}/train.*.json")
        if self.dev_utts:
            dev_dim = feat_dim(self.dev_utts, f"{args.json_dir}/dev.json")
            if dev_dim != self.dim:
                raise DataError(
                    f"{args.json_dir}/dev.json: feature dim {dev_dim}, train has {self.dim}"
                )
        self.source_utts: dict[str, dict[str, Any]] = {}
        if args.mix_json_dir is not None and args.mix_ratio > 0:
            self.source_utts = read_source_jsons(args.mix_json_dir)
            src_dim = feat_dim(self.source_utts, f"{args.mix_json_dir}/train.*.json")
            if src_dim != self.dim:
                raise DataError(
                    f"{args.mix_json_dir}: source features have dim {src_dim}, target {self.dim}"
                )

        self.setup = self._setup_model()
        self.cfg = self.setup.config
        self.tc = self.cfg["train_config"]
        self.units = self.setup.units
        self._check_token_ids()
        self.model = self.setup.model.to(info.device)
        self.frozen = apply_freeze(self.model, self.tc["freeze"])
        self.optimizer = build_optimizer(self.model, self.cfg["opti_config"], self.tc["lr_scales"])
        self.step = self.setup.base_step
        sched_start = 0 if self.tc["noam_restart"] else self.setup.base_step
        self.schedule = build_schedule(self.optimizer, self.cfg["opti_config"], sched_start)
        self.amp = bool(self.tc["amp"])
        self.use_scaler = self.amp and info.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)
        self.specaug = SpecAugment(self.cfg["trans_config"])
        self.fingerprint = self._fingerprint()

        self.start_epoch = self.setup.base_epoch + 1
        self.start_batch = 0
        self.resumed_state: dict[str, Any] | None = None
        self.validation: dict[str, float] = {}
        self._drop_partial_files()
        self._maybe_resume()
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
            st.seed_everything(self.seed * 1000 + info.rank)

        if self.tc["compile"]:
            n = compile_blocks(self.model)
            log.info("train_config.compile: %d blocks compiled (first steps are slow)", n)
        if info.distributed:
            rate = float(self.cfg["criterion_config"]["rate"])
            self.ddp: torch.nn.Module = DDP(
                self.model,
                device_ids=[info.device] if info.device.type == "cuda" else None,
                # with rate 0 or 1 the model skips CTC or the decoder entirely
                find_unused_parameters=rate in (0.0, 1.0),
            )
        else:
            self.ddp = self.model
        self.reporter = Reporter(self.exp_dir, info.is_main)
        self.target_clean, counts = clean_data(
            self.train_utts,
            self.cfg["jconfig"],
            self.model.subsampling_rate,
            f"{args.json_dir}/train.*.json",
        )
        self.dev_clean, _ = clean_data(
            self.dev_utts,
            self.cfg["valid_config"]["jconfig"],
            self.model.subsampling_rate,
            f"{args.json_dir}/dev.json",
        )
        if not self.target_clean:
            raise DataError(f"{args.json_dir}: every train utterance was filtered out ({counts})")
        self._fixed_batches: list[list[str]] | None = None

    # ----------------------------------------------------------------- setup
    def _setup_model(self) -> ModelSetup:
        a = self.args
        if a.base_model is not None:
            if not a.base_model.is_file():
                raise TrainError(f"--base-model {a.base_model}: no such file")
            setup = setup_from_base(self.cfg, a.base_model, a.json_dir, self.dim)
        else:
            missing = [n for n in ("units", "cmvn", "feature_config") if getattr(a, n) is None]
            if missing:
                raise TrainError(
                    "no --base-model: training from scratch needs "
                    + " ".join(f"--{m.replace('_', '-')}" for m in missing)
                )
            setup = setup_from_scratch(
                self.cfg, a.units, a.cmvn, a.feature_config, self.dim, a.json_dir
            )
        for note in setup.notes:
            log.warning(note)
        return setup

    def _check_token_ids(self) -> None:
        n = len(self.units)
        a = self.args
        groups = (
            (f"{a.json_dir}/train.*.json", self.train_utts),
            (f"{a.json_dir}/dev.json", self.dev_utts),
            (f"{a.mix_json_dir}/train.*.json", self.source_utts),
        )
        for where, utts in groups:
            for key, info in utts.items():
                bad = [t for t in token_ids(key, info) if not 0 < t < n - 1]
                if bad:
                    raise DataError(
                        f"{where}: utterance {key} has token ids {bad[:5]} "
                        f"outside 1..{n - 2} of the model's {n} units; the json was made with "
                        "other units"
                    )

    def _fingerprint(self) -> str:
        quiet = {"log_interval", "num_workers", "snapshot_interval", "keep_last", "dev_cer"}
        cfg = {k: v for k, v in self.cfg.items() if k != "train_config"}
        cfg["train_config"] = {k: v for k, v in self.tc.items() if k not in quiet}
        a = self.args
        return st.fingerprint(
            {
                "config": cfg,
                "json_dir": str(a.json_dir.resolve()),
                "json_nj": a.json_nj,
                "base_model": str(a.base_model.resolve()) if a.base_model else None,
                "mix": [str(a.mix_json_dir.resolve()) if a.mix_json_dir else None, a.mix_ratio],
            }
        )

    def _drop_partial_files(self) -> None:
        """Temp files of checkpoints whose writing was killed: never trusted, but as large as
        a checkpoint; remove them instead of letting every killed run add one."""
        if not (self.info.is_main and self.exp_dir.is_dir()):
            return
        names = (".checkpoint.*.tmp", f".{st.SNAPSHOT_NAME}.*.tmp")
        for p in [p for pattern in names for p in self.exp_dir.glob(pattern)]:
            log.info("removing %s (left by a run killed while writing it)", p)
            p.unlink(missing_ok=True)

    def _maybe_resume(self) -> None:
        a = self.args
        if a.resume == "none":
            if any(self.exp_dir.glob("checkpoint.*")) or (self.exp_dir / st.SNAPSHOT_NAME).exists():
                log.warning(
                    "--resume none: ignoring the training state already in %s", self.exp_dir
                )
            return
        if a.resume == "auto":
            found = st.find_resume(self.exp_dir) if self.exp_dir.is_dir() else None
            if found is None:
                return
            path, payload = found
            if payload["train_state"].get("fingerprint") != self.fingerprint:
                raise TrainError(
                    f"--resume auto: {path} was written by a run with another config, data or "
                    "base model; refusing to continue it silently. Use a new --exp-dir, "
                    "--resume none to start over, or --resume PATH to continue it anyway"
                )
        else:
            path = Path(a.resume)
            try:
                payload = load_checkpoint(path)
            except CheckpointError as exc:
                raise TrainError(f"--resume {path}: {exc}") from exc
            if "train_state" not in payload:
                raise TrainError(f"--resume {path}: holds no training state")
            if payload["train_state"].get("fingerprint") != self.fingerprint:
                log.warning("--resume %s: config/data/base differ from that run's", path)
        self._restore(path, payload)

    def _restore(self, path: Path, payload: dict[str, Any]) -> None:
        ts = payload["train_state"]
        if not ts["done"] and int(ts.get("world_size", 1)) != self.info.world_size:
            raise TrainError(
                f"{path}: mid-epoch state of {ts.get('world_size')} processes; resume it with "
                f"the same number of processes, or from a checkpoint.N"
            )
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.schedule.load_state_dict(payload["scheduler"])
            if payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainError(f"{path}: does not fit this run's model/optimizer: {exc}") from exc
        self.step = int(payload["step"])
        rngs = payload.get("rng") or []
        if len(rngs) == self.info.world_size:
            st.restore_rng(rngs[self.info.rank])
        else:
            st.seed_everything(self.seed * 1000 + self.info.rank + self.step)
        self.validation = dict(payload.get("validation") or {})
        self.resumed_state = ts
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

    # ----------------------------------------------------------------- batches
    def _epoch_data(self, epoch: int) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
        jc = self.cfg["jconfig"]
        if not self.source_utts:
            if self._fixed_batches is None:
                self._fixed_batches = make_batchset(self.target_clean, jc, self.seed)
            return self.target_clean, self._fixed_batches
        mixed = dict(self.target_clean)
        drawn = draw_source(
            self.source_utts, len(self.target_clean), self.args.mix_ratio, self.seed, epoch
        )
        drawn, _ = clean_data(drawn, jc, self.model.subsampling_rate, "mix source")
        mixed.update(drawn)
        log.info(
            "epoch %d: %d target + %d source utterances", epoch, len(self.target_clean), len(drawn)
        )
        return mixed, make_batchset(mixed, jc, self.seed)

    def _dev_batches(self):
        batches = make_batchset(self.dev_clean, self.cfg["valid_config"]["jconfig"], self.seed)
        # disjoint shares, no padding: nothing is scored twice, and no collective runs inside
        mine = list(range(len(batches)))[self.info.rank :: self.info.world_size]
        ds = BatchDataset(self.dev_clean, [batches[i] for i in mine])
        return make_loader(ds, self._workers())

    def _workers(self) -> int:
        return int(self.tc["num_workers"])

    # ----------------------------------------------------------------- checkpoints
    def _payload(self, epoch_done: int, ts: dict[str, Any]) -> dict[str, Any]:
        rngs = gather_objects(st.capture_rng(), self.info)
        return {
            "model": _unwrap(self.model).state_dict(),
            "config": self.cfg,
            "units": self.units,
            "feature_config": self.setup.feature_config,
            "epoch": epoch_done,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_scaler else {},
            "rng": rngs,
            "train_state": ts,
            "validation": self.validation,
        }

    def _train_state(
        self, epoch: int, batch: int, done: bool, order: list[int], sums: list[float]
    ) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "batch": batch,
            "done": done,
            "order": order,
            "loss_sums": list(sums),
            "fingerprint": self.fingerprint,
            "world_size": self.info.world_size,
            "base_model": self.setup.base_path,
        }

    def _save(self, name: str, payload: dict[str, Any]) -> None:
        if self.info.is_main:
            save_checkpoint(self.exp_dir / name, payload)

    # ----------------------------------------------------------------- training
    def fit(self) -> None:
        a, info = self.args, self.info
        if self.finished:
            log.info("%s already holds checkpoint.%d; nothing to do", self.exp_dir, a.epochs)
            self.reporter.close()
            return
        accum = int(self.tc["accum_grad"])
        log_every = max(1, int(self.tc["log_interval"]))
        snap_every = int(self.tc["snapshot_interval"])
        fault = _fault_at()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        autocast_dtype = torch.float16 if info.device.type == "cuda" else torch.bfloat16
        updates_this_run = 0
        t_start = time.time()
        batches_done_run = 0
        log.info(
            "training epochs %d..%d from update %d (lr %.3e), %d train / %d dev utterances, "
            "%d frozen parameter tensors",
            self.start_epoch,
            a.epochs,
            self.step,
            self.schedule.current_lr(),
            len(self.target_clean),
            len(self.dev_clean),
            len(self.frozen),
        )
        for epoch in range(self.start_epoch, a.epochs + 1):
            utts, batches = self._epoch_data(epoch)
            order = epoch_order(len(batches), self.seed, epoch)
            start = 0
            sums = [0.0, 0.0]  # loss * utts, utts (this rank, this epoch)
            if self.resumed_state is not None and epoch == self.start_epoch and self.start_batch:
                if self.resumed_state.get("order") != order:
                    raise TrainError(
                        "resume: the batch order of this epoch differs from the saved one "
                        "(data or jconfig changed); resume from a checkpoint.N instead"
                    )
                start = self.start_batch
                sums = list(self.resumed_state.get("loss_sums", sums))
            mine = shard_for_rank(order, info.rank, info.world_size, self.tc["ddp_pad"])
            n = len(mine)
            if n == 0:
                raise DataError(f"epoch {epoch}: no training batches for rank {info.rank}")
            ds = BatchDataset(
                utts,
                [batches[i] for i in mine[start:]],
                self.specaug,
                rng_key=(self.seed, epoch, info.rank),
                positions=list(range(start, n)),
            )
            loader = make_loader(ds, self._workers(), self.info.device.type == "cuda")
            bar = self._bar(n, start, epoch)
            window = [0.0] * 6  # loss, ctc, att, acc, batches, frames
            t_window = time.time()
            self.ddp.train()
            self.optimizer.zero_grad(set_to_none=True)
            for k, batch in enumerate(loader, start=start):
                group_start = k - k % accum
                group = min(accum, n - group_start)
                last_in_group = k - group_start == group - 1
                feats = batch["feats"].to(info.device, non_blocking=True)
                lens = batch["feat_lens"].to(info.device)
                ys = batch["ys"].to(info.device)
                sync = contextlib.nullcontext()
                if info.distributed and not last_in_group:
                    sync = self.ddp.no_sync()
                with sync:
                    with torch.autocast(info.device.type, dtype=autocast_dtype, enabled=self.amp):
                        out = self.ddp(feats, lens, ys)
                    # the group's gradient is the mean over its batches
                    self.scaler.scale(out["loss"] / group).backward()
                b = feats.shape[0]
                sums[0] += float(out["loss"].detach()) * b
                sums[1] += b
                window[0] += float(out["loss"].detach())
                window[1] += float(out["loss_ctc"].detach())
                window[2] += float(out["loss_att"].detach())
                window[3] += float(out["acc"])
                window[4] += 1
                window[5] += float(lens.sum())
                batches_done_run += 1
                if bar is not None:
                    bar.update(1)
                if not last_in_group:
                    continue
                updated = self._update(trainable)
                if not updated:
                    continue
                updates_this_run += 1
                if self.step % log_every == 0:
                    self._log_window(epoch, k + 1, n, window, t_window, t_start, batches_done_run)
                    window = [0.0] * 6
                    t_window = time.time()
                stop = a.max_steps > 0 and updates_this_run >= a.max_steps
                if (snap_every > 0 and self.step % snap_every == 0) or stop:
                    ts = self._train_state(epoch, k + 1, False, order, sums)
                    self._save(st.SNAPSHOT_NAME, self._payload(epoch - 1, ts))
                if fault is not None and self.step == fault[0] and fault[1] in (None, info.rank):
                    raise RuntimeError(f"injected fault ({FAULT_ENV}) after update {self.step}")
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
            ds.close()
            self._end_epoch(epoch, order, sums, n)
        self.reporter.close()
        if info.is_main:
            png = plot_curves(self.exp_dir)
            log.info("training done; curves in %s", png)

    def _update(self, trainable: list[torch.nn.Parameter]) -> bool:
        """Clip, step, schedule. False when the update was skipped (non-finite gradients)."""
        self.scaler.unscale_(self.optimizer)
        clip = float(self.tc["grad_clip"])
        norm = torch.nn.utils.clip_grad_norm_(trainable, clip if clip > 0 else float("inf"))
        if self.use_scaler:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            ok = self.scaler.get_scale() >= scale
        else:
            # DDP has averaged the gradients, so every rank sees the same norm and skips alike
            ok = bool(torch.isfinite(norm))
            if ok:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not ok:
            log.warning("update skipped: gradient norm %s is not finite", float(norm))
            return False
        self.step += 1
        self.schedule.step()
        return True

    def _log_window(
        self, epoch: int, batch: int, n: int, w: list[float], t0: float, t_start: float, done: int
    ) -> None:
        w = all_reduce_sum(w, self.info)
        nb = max(w[4], 1.0)
        elapsed = max(time.time() - t0, 1e-9)
        per_batch = (time.time() - t_start) / max(done, 1)
        remaining = (n - batch) + (self.args.epochs - epoch) * n
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
            self.schedule.lr_at(self.schedule.step_count),
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
                "train/lr": self.schedule.lr_at(self.schedule.step_count),
                "train/frames_per_s": w[5] / elapsed,
            },
            self.step,
        )

    def _end_epoch(self, epoch: int, order: list[int], sums: list[float], n: int) -> None:
        total = all_reduce_sum(sums, self.info)
        train_loss = total[0] / max(total[1], 1.0)
        if self.dev_clean:
            self.validation = validate(
                _unwrap(self.model),
                self._dev_batches(),
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
        ts = self._train_state(epoch, n, True, order, sums)
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
            (self.exp_dir / st.SNAPSHOT_NAME).unlink(missing_ok=True)
            for p in st.prune_checkpoints(self.exp_dir, int(self.tc["keep_last"])):
                log.info("removed %s (keep_last %d)", p, self.tc["keep_last"])

    def _bar(self, n: int, start: int, epoch: int):
        if not (self.info.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=n, initial=start, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def run(args: TrainArgs) -> int:
    """Run stage 3; returns the process exit code. Errors on any rank exit non-zero with a
    message naming the rank, so torchrun stops the others instead of leaving them waiting."""
    args.exp_dir.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0") or 0)
    setup_logging(rank == 0, args.exp_dir / "train.log")
    info: DistInfo | None = None
    try:
        timeout = load_train_config(args.config)["train_config"]["ddp_timeout"]
        info = init_distributed(args.device, float(timeout))
        trainer = Trainer(args, info)
        print_config(
            {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()},
                "world_size": info.world_size,
                "device": str(info.device),
            },
            trainer.cfg,
        )
        trainer.fit()
    except Exception as exc:
        log.error("rank %d failed: %s: %s", rank, type(exc).__name__, exc)
        if not isinstance(exc, (TrainError, DataError, ValueError, CheckpointError)):
            log.exception("traceback of rank %d", rank)
        return 1
    finally:
        if info is not None:
            with contextlib.suppress(Exception):
                shutdown(info)
        close_logging()
    return 0
