"""Guarantee 6: a checkpoint whose pickle would run code is refused wherever a checkpoint is
loaded, and configuration files are read with safe YAML (``!!python/…`` tags refused).

Every entry point is called with a file that runs ``touch MARKER`` when unpickled (torch zip
format and a bare legacy pickle): each must fail with a message naming the file, and the
marker must never appear. A static scan of the code backs this up: every ``torch.load`` passes
``weights_only=True``, and no ``pickle.load``, unsafe ``yaml.load`` or pickled ``np.load``.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import repo_files
from reliability_helpers import REPO
from test_train_support import make_base_model, make_data_dir

from e2e_asr.data.augment import AugmentConfig
from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.data.features import FeatureConfig
from e2e_asr.data.jsonprep import load_filters
from e2e_asr.data.validate import DataConfig
from e2e_asr.decode.config import DecodeConfig
from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint, load_model
from e2e_asr.model.importers.common import BaseModelImportError, load_torch_file
from e2e_asr.train import resume as train_state
from e2e_asr.train.config import apply_overrides, load_train_config
from e2e_asr.train.trainer import TrainArgs, run


class RunsCode:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _evil_files(tmp: Path, marker: Path) -> dict[str, Path]:
    """A training payload carrying the payload, in torch's zip format and as a bare pickle."""
    zip_path = tmp / "zip" / "checkpoint.3"
    zip_path.parent.mkdir(parents=True)
    good = make_base_model(tmp / "good" / "checkpoint.3", make_data_dir(tmp / "d", 2, 1))
    payload = load_checkpoint(good)
    payload["config"]["hook"] = RunsCode(marker)
    torch.save(payload, zip_path)
    raw = tmp / "raw" / "checkpoint.3"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(pickle.dumps({"model": RunsCode(marker), "units": []}, protocol=2))
    return {"zip": zip_path, "raw": raw}


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("untrusted")
    marker = tmp / "PWNED"
    files = _evil_files(tmp, marker)
    wav = tmp / "a.wav"
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    data = tmp / "data"
    write_data_dir(data, [Utterance("a", str(wav), "你好", "s")])
    json_dir = make_data_dir(tmp / "json", n_train=2, n_dev=1)
    return {"tmp": tmp, "marker": marker, "files": files, "data": data, "json": json_dir}


@pytest.fixture(autouse=True)
def _drop_training_log_handlers() -> Iterator[None]:
    """run() logs to the stderr of the moment (capsys here): do not leave that handler."""
    yield
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_e2e_asr_train", False):
            root.removeHandler(h)
            h.close()


def _script(rel: str) -> ModuleType:
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli(rel: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    mod = _script(rel)
    monkeypatch.setattr(sys, "argv", [rel, *argv])
    try:
        return int(mod.main(argv) if mod.main.__code__.co_argcount else mod.main())
    except SystemExit as e:  # argparse
        return int(e.code or 0)


# entry point -> callable(evil file, fixture, monkeypatch, tmp) returning the exit code
def _train_base(f: Path, e: dict, mp: pytest.MonkeyPatch, tmp: Path) -> int:
    return run(TrainArgs(config=REPO / "tests" / "data" / "tiny_train.yaml", json_dir=e["json"],
                         exp_dir=tmp / "exp", epochs=9, base_model=f, device="cpu"))  # fmt: skip


def _train_resume(f: Path, e: dict, mp: pytest.MonkeyPatch, tmp: Path) -> int:
    base = make_base_model(tmp / "base" / "checkpoint.3", e["json"])
    conf = REPO / "tests" / "data" / "tiny_train.yaml"
    return run(
        TrainArgs(config=conf, json_dir=e["json"], exp_dir=tmp / "exp", epochs=9,
                  base_model=base, resume=str(f), device="cpu")
    )  # fmt: skip


def _import(f: Path, e: dict, mp: pytest.MonkeyPatch, tmp: Path) -> int:
    """An ESPnet1 recipe dir (model.json, cmvn) whose weights file is the untrusted one."""
    from test_import_espnet1 import espnet1_args, our_model, write_recipe

    src, _, _ = write_recipe(tmp / "recipe", our_model(False), espnet1_args(False),
                             "model.acc.best", False)  # fmt: skip
    _copy_as(f, src)
    return _cli("steps/import_base_model.py", [str(src), str(tmp / "imported")], mp)


def _copy_as(f: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(f.read_bytes())
    return dest


ENTRY_POINTS: dict[str, Callable[[Path, dict, pytest.MonkeyPatch, Path], int]] = {
    "train --base-model": _train_base,
    "train --resume PATH": _train_resume,
    "make_json --base-model": lambda f, e, mp, tmp: _cli(
        "steps/make_json.py",
        [
            "--data-dir",
            str(e["data"]),
            "--out-dir",
            str(tmp / "j"),
            "--base-model",
            str(f),
            "--json-nj",
            "1",
            "--num-utt-percent",
            "2",
        ],
        mp,
    ),
    "base_feature_config (stage 1)": lambda f, e, mp, tmp: _cli(
        "utils/base_feature_config.py", [str(f), str(tmp / "f.yaml")], mp
    ),
    "average_checkpoints": lambda f, e, mp, tmp: _cli(
        "steps/average_checkpoints.py",
        [
            str(_copy_as(f, tmp / "exp" / "checkpoint.3").parent),
            "3",
            "4",
            "--out",
            str(tmp / "avg"),
        ],
        mp,
    ),
    "export": lambda f, e, mp, tmp: _cli(
        "steps/export.py", ["--checkpoint", str(f), "--out-dir", str(tmp / "export")], mp
    ),
    "decode --checkpoint": lambda f, e, mp, tmp: _cli(
        "steps/decode.py",
        ["--checkpoint", str(f), "--data-dir", str(e["data"]), "--out-dir", str(tmp / "dec")],
        mp,
    ),
    "import_base_model": _import,
}


@pytest.mark.parametrize("kind", ["zip", "raw"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_code_in_a_checkpoint_never_runs(
    evil: dict, entry: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    f = evil["files"][kind]
    caplog.set_level(logging.INFO)
    rc = ENTRY_POINTS[entry](f, evil, monkeypatch, tmp_path)
    out = capsys.readouterr()
    logs = caplog.text + "".join(p.read_text() for p in tmp_path.rglob("train.log"))
    text = out.out + out.err + logs
    assert rc != 0, text[-2000:]
    assert not evil["marker"].exists(), f"{entry} ran the code in {f}"
    # the message says which file and why (the copies made for some entry points included)
    assert f.name in text or "model.acc.best" in text, text[-2000:]
    words = ("refused", "Weights only load failed", "Unsupported global", "plain Python data")
    assert any(w in text for w in words), text[-2000:]


def test_library_loaders_refuse_and_auto_resume_skips(
    evil: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for f in evil["files"].values():
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(f)
        with pytest.raises(CheckpointError, match="refused"):
            load_model(f)
        with pytest.raises(BaseModelImportError, match="refused"):
            load_torch_file(f)
    # --resume auto over an exp dir holding such a checkpoint.N: skipped by name, not run
    exp = tmp_path / "exp"
    _copy_as(evil["files"]["zip"], exp / "checkpoint.7")
    with caplog.at_level(logging.WARNING):
        assert train_state.find_resume(exp) is None
    assert f"skipping {exp / 'checkpoint.7'}" in caplog.text and "refused" in caplog.text
    assert not evil["marker"].exists()


YAML_BOMB = '!!python/object/apply:os.system ["touch {marker}"]\n'


def test_configs_are_read_with_safe_yaml(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    bomb = YAML_BOMB.format(marker=marker)
    readers: dict[str, Callable[[Path], object]] = {
        "training yaml": load_train_config,
        "feature yaml": FeatureConfig.from_yaml,
        "data yaml": DataConfig.from_yaml,
        "decode yaml": DecodeConfig.from_yaml,
        "augment yaml": AugmentConfig.from_yaml,
        "stage-2 filters (training yaml)": load_filters,
    }
    for name, reader in readers.items():
        for text in (bomb, f"section:\n  key: {bomb}"):
            p = tmp_path / f"{name.split()[0]}.yaml"
            p.write_text(text, encoding="utf-8")
            with pytest.raises(Exception) as info:  # noqa: PT011 - each reader has its own type
                reader(p)
            assert "python/object" in str(info.value) or str(p) in str(info.value), name
            assert not marker.exists(), name
    # a --set override is YAML too
    cfg = load_train_config(REPO / "tests" / "data" / "tiny_train.yaml")
    with pytest.raises(Exception):  # noqa: B017, PT011
        apply_overrides(cfg, [f"train_config.seed={bomb.strip()}"])
    assert not marker.exists()


def _code_files() -> list[Path]:
    # git's file list, not a tree walk: another test's copy of egs/aishell comes and goes
    # meanwhile (symlinked scripts are read through their targets, also listed)
    return repo_files("src/*.py", "steps/*.py", "utils/*.py", "local/*.py", "egs/*/local/*.py")


def test_no_unsafe_deserialisation_in_the_code() -> None:
    """Static: torch.load always weights_only=True; no pickle, unsafe yaml, pickled np.load."""
    problems = []
    for path in _code_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}: {name}"
            if name.endswith("torch.load") or name == "load" and "weights_only" in kw:
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    problems.append(f"{where} without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load",
                          "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                          "torch.jit.load", "eval", "exec"):  # fmt: skip
                problems.append(where)
            elif name in ("np.load", "numpy.load"):
                v = kw.get("allow_pickle")
                if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                    problems.append(f"{where} with allow_pickle")
    assert not problems, "\n".join(problems)
    assert len(_code_files()) > 50  # the scan did look at the code
