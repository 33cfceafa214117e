"""The trainer's parts, each built and checked on its own (no training run): precision,
fingerprint and RNG state, the lazy json index, the step runner's update/OOM guard/probe, the
fine-tuning LR. CPU only (device pinned)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train_support import UNITS, make_data_dir, write_config

from e2e_asr.data.espnet_json import JsonWriter, read_utts
from e2e_asr.data.loader import DataError, collate
from e2e_asr.model import build_model
from e2e_asr.train import resume as rs
from e2e_asr.train.config import ConfigError, apply_overrides, load_train_config
from e2e_asr.train.data import (
    SHARD_RECORD,
    EntryView,
    TrainData,
    build_index,
    iter_json_entries,
    train_shards,
)
from e2e_asr.train.errors import TrainError
from e2e_asr.train.optimizer import build_optimizer
from e2e_asr.train.precision import (
    Precision,
    PrecisionError,
    cpu_bf16_flags,
    normalize_amp,
    resolve_precision,
)
from e2e_asr.train.scheduler import (
    base_lr_summary,
    build_schedule,
    peak_lr,
    resolve_auto_lr,
    run_peak_lr,
)
from e2e_asr.train.step import StepRunner, batch_setting

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- precision
def test_amp_setting_resolves_per_device() -> None:
    assert normalize_amp(True) == "auto" and normalize_amp(False) == "off"
    with pytest.raises(PrecisionError, match="auto\\|bf16\\|fp16\\|off"):
        normalize_amp("fp8")
    # CPU: bf16 only where native; fp16 refused (no loss scaling on CPU)
    assert resolve_precision("auto", CPU, cpu_flags=[]).mode == "off"
    p = resolve_precision(True, CPU, cpu_flags=["amx_bf16"])
    assert p.mode == "bf16" and "amx_bf16" in p.describe() and not p.uses_scaler
    forced = resolve_precision("bf16", CPU, cpu_flags=[])
    assert forced.mode == "bf16" and "emulated" in forced.describe()
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU, cpu_flags=["avx512_bf16"])
    # CUDA: bf16 where supported, fp16 + GradScaler where not; TF32 on
    gpu = torch.device("cuda", 0)
    b = resolve_precision("auto", gpu, cuda_bf16=True)
    assert b.mode == "bf16" and b.tf32 and not b.uses_scaler
    f = resolve_precision("auto", gpu, cuda_bf16=False)
    assert f.mode == "fp16" and f.uses_scaler and "GradScaler" in f.describe()
    with pytest.raises(PrecisionError, match="no native bf16"):
        resolve_precision("bf16", gpu, cuda_bf16=False)
    assert resolve_precision(False, gpu, cuda_bf16=True).mode == "off"


def test_cpu_bf16_flags_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f\n\nflags : fpu amx_bf16 avx2\n")
    assert cpu_bf16_flags(info) == ["amx_bf16"]
    info.write_text("flags : fpu avx2\n")
    assert cpu_bf16_flags(info) == []
    assert cpu_bf16_flags(tmp_path / "missing") == []


def test_bf16_autocast_keeps_weights_and_loss_fp32() -> None:
    p = Precision("bf16", CPU, "test")
    lin = torch.nn.Linear(4, 4)
    with p.autocast():
        y = lin(torch.randn(2, 4))
        loss = torch.log_softmax(y.float(), -1).sum()
    assert y.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert lin.weight.dtype == torch.float32
    assert not p.make_scaler().is_enabled()


def test_amp_config_values(tmp_path: Path) -> None:
    for given, want in ((True, "auto"), (False, "off"), ("bf16", "bf16"), ("fp16", "fp16")):
        cfg = load_train_config(write_config(tmp_path / "c.yaml", {"train_config": {"amp": given}}))
        assert cfg["train_config"]["amp"] == want
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    assert cfg["train_config"]["amp"] == "auto"  # the default
    with pytest.raises(ConfigError, match="amp"):
        apply_overrides(cfg, ["train_config.amp=fp8"])


# ----------------------------------------------------------------------------- resume
def test_fingerprint_ignores_operational_keys_and_paths(tmp_path: Path) -> None:
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    data = [{"name": "train.1.json", "size": 10}]
    fp = rs.run_fingerprint(cfg, data, {"name": "checkpoint.3", "size": 5})
    operational = (("ddp_timeout", 5), ("log_interval", 7), ("num_workers", 0),
                   ("snapshot_interval", 3), ("keep_last", 2), ("oom_probe", True))  # fmt: skip
    for key, value in operational:
        changed = apply_overrides(cfg, [f"train_config.{key}={value}"])
        assert rs.run_fingerprint(changed, data, {"name": "checkpoint.3", "size": 5}) == fp, key
    lr = apply_overrides(cfg, ["opti_config.factor=0.5"])
    assert rs.run_fingerprint(lr, data, {"name": "checkpoint.3", "size": 5}) != fp
    # the same data at two mount points: the same identity
    a = make_data_dir(tmp_path / "a" / "data", n_train=4, n_dev=1)
    b = tmp_path / "b" / "elsewhere"
    b.parent.mkdir()
    a.rename(b)
    ident_b = TrainData(b).identity()
    b.rename(a)
    assert TrainData(a).identity() == ident_b
    assert all("/" not in d["name"] for d in ident_b)
    assert rs.file_identity(a / "units.txt") == {
        "name": "units.txt",
        "size": (a / "units.txt").stat().st_size,
    }


def test_rng_state_round_trip_and_cuda_state_without_gpu() -> None:
    rs.seed_everything(3)
    state = rs.capture_rng()
    a = torch.rand(3)
    assert rs.restore_rng(state) == []
    assert torch.equal(torch.rand(3), a)
    if torch.cuda.is_available():
        pytest.skip("the no-GPU message is for hosts without CUDA")
    # a state saved on a GPU host (older layout: one state per visible device, or the new one)
    for extra in ({"cuda": [torch.zeros(16, dtype=torch.uint8)] * 4},
                  {"cuda_device": torch.zeros(16, dtype=torch.uint8)}):  # fmt: skip
        notes = rs.restore_rng({**state, **extra})
        assert len(notes) == 1 and "no GPU is visible" in notes[0]
        assert torch.equal(torch.rand(3), a)  # the CPU streams are still restored


def test_single_process_resume_decision(tmp_path: Path) -> None:
    from e2e_asr.model.checkpoint import save_checkpoint
    from e2e_asr.train.distributed import DistInfo

    info = DistInfo()
    assert rs.agree_on_resume(info, tmp_path, "auto", "fp1") == (None, None)
    payload = {"model": {}, "optimizer": {}, "step": 4,
               "train_state": {"fingerprint": "fp1", "done": True, "epoch": 1}}  # fmt: skip
    save_checkpoint(tmp_path / "checkpoint.1", payload)
    path, got = rs.agree_on_resume(info, tmp_path, "auto", "fp1")
    assert path == tmp_path / "checkpoint.1" and got is not None and got["step"] == 4
    with pytest.raises(TrainError, match="another config"):
        rs.agree_on_resume(info, tmp_path, "auto", "fp2")
    assert rs.agree_on_resume(info, tmp_path, "none", "fp2") == (None, None)
    assert rs.state_listing(tmp_path) == [
        ("checkpoint.1", (tmp_path / "checkpoint.1").stat().st_size)
    ]
    rs.verify_start(info, 4, 2, 0, "fp1")  # one rank always agrees with itself


# ----------------------------------------------------------------------------- lazy json
def _write(path: Path, utts: dict, compact: bool = False) -> None:
    if compact:
        path.write_text(json.dumps({"other": [1, 2], "utts": utts}, ensure_ascii=False))
        return
    with JsonWriter(path) as w:
        for k, v in utts.items():
            w.add(k, v)


@pytest.mark.parametrize("compact", [False, True])
def test_json_index_offsets_give_back_each_entry(tmp_path: Path, compact: bool) -> None:
    utts = {
        f"utt{i}": {
            "input": [{"feat": f"a.ark:{i}", "name": "input1", "shape": [20 + i, 8]}],
            "output": [
                {
                    "name": "target1",
                    "shape": [2, 8],
                    "text": "你好" * i,
                    "token": "你 好",
                    "tokenid": "2 3",
                }
            ],  # fmt: skip
            "utt2spk": "说话人",
        }
        for i in range(40)
    }
    path = tmp_path / "train.1.json"
    _write(path, utts, compact)
    seen = {}
    blob = path.read_bytes()
    for key, off, length, entry in iter_json_entries(path):
        assert json.loads(blob[off : off + length]) == entry == utts[key]
        seen[key] = entry
    assert seen == read_utts(path)
    # a tiny read chunk crosses multi-byte characters and entries: the same result
    from e2e_asr.train.data import _Scanner

    small = {k: (o, n) for k, o, n, _ in _Scanner(path, chunk=7).entries()}
    assert small == {k: (o, n) for k, o, n, _ in iter_json_entries(path)}
    index = build_index([path])
    view = EntryView(index)
    assert view["utt7"] == utts["utt7"] and len(view) == 40
    assert index.shape_entry("utt3") == {"input": [{"shape": [23, 8]}],
                                         "output": [{"shape": [2, 8]}]}  # fmt: skip


def test_json_index_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "train.1.json"
    bad.write_text('{"utts": {\n "a": {"input": [{"shape": [3, 8]}]},\n "b": [1, }\n}')
    with pytest.raises(DataError, match=r"train\.1\.json:3: invalid json"):
        list(iter_json_entries(bad))
    bad.write_text('{"other": 1}')
    with pytest.raises(DataError, match="'utts' mapping"):
        list(iter_json_entries(bad))
    dup = tmp_path / "train.2.json"
    dup.write_text('{"utts": {"a": {"input": [{"shape": [3, 8]}], "output": [{"shape": [1, 8], '
                   '"tokenid": "2"}]}}}')  # fmt: skip
    with pytest.raises(DataError, match="also appears"):
        build_index([dup, dup])


def test_train_shards_from_stage2_record(tmp_path: Path) -> None:
    d = make_data_dir(tmp_path / "data", n_train=6, n_dev=1, json_nj=3)
    assert [p.name for p in train_shards(d)] == ["train.1.json", "train.2.json", "train.3.json"]
    (d / SHARD_RECORD).write_text("train.1.json\ntrain.2.json\n")
    assert [p.name for p in train_shards(d)] == ["train.1.json", "train.2.json"]
    with pytest.raises(DataError, match="--json-nj 3, but stage 2 recorded 2"):
        train_shards(d, 3)
    (d / SHARD_RECORD).unlink()
    for i in range(4, 11):  # numeric order: train.10 after train.9
        (d / f"train.{i}.json").write_text('{"utts": {}}')
    assert train_shards(d)[-1].name == "train.10.json"
    with pytest.raises(DataError, match="missing"):
        train_shards(d, 12)


def test_train_data_plans_an_epoch_a_shard_at_a_time(tmp_path: Path) -> None:
    d = make_data_dir(tmp_path / "data", n_train=16, n_dev=2, json_nj=4)
    data = TrainData(d)
    # between epochs: counts per shard, no utterance
    assert data.dim == 8 and [s.utts for s in data.train] == [4, 4, 4, 4] and len(data.dev) == 2
    data.check_token_ids(len(UNITS))
    with pytest.raises(DataError, match="outside 1..3 of the model's 5 units"):
        data.check_token_ids(5)
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4, seed=7)
    assert data.n_train == 16 and [s.batches for s in data.train] == [2, 2, 2, 2]
    plans = [data.epoch_plan(e) for e in range(1, 6)]
    assert all(sorted(p.order) == [0, 1, 2, 3] and p.batches == 8 for p in plans)
    assert len({tuple(p.order) for p in plans}) > 1  # the shard order changes per epoch
    assert data.epoch_plan(3).state() == plans[2].state()
    plan = plans[0]
    seen: dict[str, dict] = {}
    for j, shard in enumerate(plan.order):
        seg = data.segment(plan, j)
        own = read_utts(d / f"train.{shard + 1}.json")
        # a segment batches its own shard's utterances, read from that shard on access
        assert sorted(k for b in seg.batches for k in b) == sorted(own)
        assert sorted(seg.order) == list(range(len(seg.batches)))
        seen.update({k: seg.entries[k] for b in seg.batches for k in b})
        seg.close()
    everything = {}
    for i in range(1, 5):
        everything.update(read_utts(d / f"train.{i}.json"))
    assert seen == everything
    # a shard that changed after the plan was made is named, not trained silently
    shard = plan.order[0]
    path = d / f"train.{shard + 1}.json"
    utts = read_utts(path)
    utts.popitem()
    with JsonWriter(path) as w:
        for k, v in utts.items():
            w.add(k, v)
    with pytest.raises(DataError, match=f"train.{shard + 1}.json: its batches differ"):
        data.segment(plan, 0)


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_gets_an_equal_share_of_every_shard(tmp_path: Path, world: int) -> None:
    d = make_data_dir(tmp_path / "data", n_train=23, n_dev=1, json_nj=3)
    data = TrainData(d)
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4, seed=1)
    plan = data.epoch_plan(2)
    for pad in ("repeat", "drop"):
        counts = [plan.rank_counts(r, world, pad) for r in range(world)]
        assert all(c == counts[0] for c in counts)
        for j in range(len(plan.order)):
            seg = data.segment(plan, j)
            shares = [seg.for_rank(r, world, pad) for r in range(world)]
            assert [len(s) for s in shares] == [c[j] for c in counts]
            flat = [tuple(b) for s in shares for b in s]
            if pad == "repeat":  # every batch trained, a few twice
                assert set(flat) == {tuple(b) for b in seg.batches}
            else:  # none twice
                assert len(flat) == len(set(flat))
            seg.close()


def _corpus(root: Path, n: int, per_shard: int) -> Path:
    """A stage-2-like directory of ``n`` shape-only utterances in shards of ``per_shard``."""
    root.mkdir(parents=True)
    names = []
    for j in range(0, n, per_shard):
        names.append(f"train.{len(names) + 1}.json")
        with JsonWriter(root / names[-1]) as w:
            for i in range(j, min(n, j + per_shard)):
                w.add(f"utt{i:07d}", {
                    "input": [{"feat": f"feats.ark:{i}", "name": "input1",
                               "shape": [100 + i % 300, 8]}],
                    "output": [{"name": "target1", "shape": [5, len(UNITS)], "text": "abcde",
                                "token": "a b c d e", "tokenid": "2 3 4 5 6"}],
                    "utt2spk": "spk1",
                })  # fmt: skip
    (root / SHARD_RECORD).write_text("".join(n + "\n" for n in names))
    with JsonWriter(root / "dev.json") as w:
        w.add("dev1", {"input": [{"feat": "feats.ark:0", "name": "input1", "shape": [100, 8]}],
                       "output": [{"name": "target1", "shape": [1, len(UNITS)],
                                   "tokenid": "2"}]})  # fmt: skip
    return root


def _data_side_peak(json_dir: Path, cfg: dict) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    data = TrainData(json_dir)
    data.clean(cfg["jconfig"], cfg["valid_config"]["jconfig"], 4, seed=1)
    plan = data.epoch_plan(1)
    for j in range(len(plan.order)):
        data.segment(plan, j).close()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_train_data_memory_does_not_grow_with_the_number_of_shards(tmp_path: Path) -> None:
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    _data_side_peak(_corpus(tmp_path / "warm", 100, 100), cfg)  # one-time allocations
    small = _data_side_peak(_corpus(tmp_path / "small", 500, 100), cfg)
    large = _data_side_peak(_corpus(tmp_path / "large", 2500, 100), cfg)
    assert large < 1.2 * small, (small, large)
    # the measurement sees what is held: the same utterances in one shard, indexed at once
    one_shard = _data_side_peak(_corpus(tmp_path / "one_shard", 2500, 2500), cfg)
    assert one_shard > 2 * small, (small, one_shard)


# ----------------------------------------------------------------------------- step runner
def _runner(tmp_path: Path, accum_grad: int = 1) -> tuple[StepRunner, dict]:
    cfg = load_train_config(write_config(tmp_path / "c.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg["model_config"], cfg["criterion_config"]).train()
    opt = build_optimizer(model, cfg["opti_config"], {})
    sched = build_schedule(opt, cfg["opti_config"], 10)
    p = Precision("off", CPU, "test")
    runner = StepRunner(model, opt, sched, p, p.make_scaler(), 5.0, step=10)
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(30 + 5 * i, 8, generator=g) for i in range(3)]
    batch = collate(feats, [[2, 3, 4], [3, 4], [5, 2, 2]])
    batch["keys"] = ["uttA", "uttB", "uttC"]
    return runner, batch


def test_step_runner_updates_and_keeps_losses_on_device(tmp_path: Path) -> None:
    runner, batch = _runner(tmp_path)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train_batch(batch, 1, True, "test batch", "jconfig.batch_size")
    assert runner.window.device.type == "cpu" and runner.window[4] == 1.0
    assert runner.update() and runner.step == 11 and runner.schedule.step_count == 11
    assert any(not torch.equal(before[k], v) for k, v in runner.model.state_dict().items())
    w = runner.take_window()
    assert w[4] == 1.0 and w[5] == float(batch["feat_lens"].sum()) and w[0] > 0
    assert runner.take_window()[4] == 0.0  # reset
    assert runner.epoch_sums[1] == 3.0
    # a non-finite gradient: the update is skipped, nothing counted
    runner.train_batch(batch, 1, True, "test batch", "jconfig.batch_size")
    next(runner.model.parameters()).grad.fill_(float("inf"))
    state = {k: v.clone() for k, v in runner.model.state_dict().items()}
    assert not runner.update() and runner.step == 11
    assert all(torch.equal(state[k], v) for k, v in runner.model.state_dict().items())


def _oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (fake)")


def test_out_of_memory_in_a_batch_names_it_and_how_to_continue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, batch = _runner(tmp_path)
    monkeypatch.setattr(runner.model, "forward", _oom)
    with pytest.raises(TrainError) as err:
        runner.train_batch(batch, 1, True, "epoch 4, batch 7 of 9 (rank 0)", "jconfig.batch_size")
    msg = str(err.value)
    assert "out of memory in epoch 4, batch 7 of 9" in msg
    assert "uttA, uttB, uttC" in msg and "3 utterances x 40 padded frames" in msg
    assert "jconfig.batch_size" in msg and "--resume EXP/checkpoint.N" in msg


def test_probe_leaves_no_trace_and_reports_oom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, batch = _runner(tmp_path)
    state = {k: v.clone() for k, v in runner.model.state_dict().items()}
    rng = torch.get_rng_state()
    assert runner.probe(batch, "batch 3 of epoch 1", "x").endswith("fits")
    assert torch.equal(torch.get_rng_state(), rng)  # dropout streams untouched
    assert all(p.grad is None for p in runner.model.parameters())
    assert all(torch.equal(state[k], v) for k, v in runner.model.state_dict().items())
    monkeypatch.setattr(runner.model, "forward", _oom)
    with pytest.raises(TrainError, match=r"start-up probe.*batch 3 of epoch 1.*uttA.*ilen_max"):
        runner.probe(batch, "batch 3 of epoch 1", "jconfig.batch_frames_in (now 6000)")


def test_batch_setting_names_the_knob() -> None:
    assert batch_setting({"count": "seq", "batch_size": 16}) == "jconfig.batch_size (now 16)"
    assert batch_setting({"count": "frame", "batch_frames_in": 6000}) == (
        "jconfig.batch_frames_in (now 6000)"
    )
    assert "batch_bins" in batch_setting({"count": "bin", "batch_bins": 9})


# ----------------------------------------------------------------------------- LR
def test_auto_lr_from_the_base_schedule() -> None:
    noam = {"name": "noam", "factor": 1.0, "warm_step": 25000, "model_size": 256}
    assert peak_lr(noam) == pytest.approx(256**-0.5 * 25000**-0.5)
    ft = {"name": "warmup_decay", "lr": "auto", "warm_step": 100, "decay": "inverse_sqrt",
          "decay_steps": 0, "final_lr": 0.0}  # fmt: skip
    got, note = resolve_auto_lr(ft, noam)
    assert got["lr"] == pytest.approx(0.5 * peak_lr(noam)) and "0.5 x" in note
    assert ft["lr"] == "auto"  # the input is not changed
    got, note = resolve_auto_lr(ft, None)
    assert got["lr"] == 1e-3 and "no base schedule" in note
    assert resolve_auto_lr({**ft, "lr": 2e-4}, noam) == ({**ft, "lr": 2e-4}, None)
    last, peak = base_lr_summary(noam, 2124)
    assert peak == pytest.approx(3.95e-4, rel=1e-2) and last < peak
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    sched = build_schedule(opt, {**ft, "lr": 1e-3}, 0)
    assert run_peak_lr(sched, 50) == pytest.approx(0.5e-3)  # still warming up at update 50
    assert run_peak_lr(sched, 5000) == pytest.approx(1e-3)
    # the seed's schedule continued from a base at update 2124: the LR issue 11 met
    cont = build_schedule(opt, noam, 2124)
    assert run_peak_lr(cont, 300) < 1e-4
