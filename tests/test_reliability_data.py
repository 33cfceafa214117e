"""Guarantee 2: the feature (stage 1) and json (stage 2) stages killed with SIGKILL and re-run
leave complete, consistent outputs: every feats.scp entry loads with kaldiio, counts match the
data dir, no duplicate key, no half-written entry, and the result equals an uninterrupted run.

The whole process group (make_feats.py, the job runner and every feature job) is SIGKILLed at
an exact point by tests/reliability_inject/sitecustomize.py; the re-run is the same command.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from conftest_data import make_features_inprocess, read_table, write_wav
from reliability_helpers import REPO, finish, py, start

from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.data.espnet_json import read_utts
from e2e_asr.data.feature_jobs import prepare_state, run_job
from e2e_asr.data.features import FeatureConfig
from e2e_asr.data.jsonprep import prepare_json
from e2e_asr.data.prepare import make_data_dir
from e2e_asr.data.units import build_units, write_units
from e2e_asr.train.setup import MismatchError, _load_feature_yaml

N_UTTS = 6
NJ = 2
TEXTS = [
    "你好世界",
    "今天天气很好",
    "我爱北京",
    "天天向上",
    "世界很大",
    "你好",
    "再见",
    "今天",
    "好",
]
FEAT_KILLS = {
    # the first job to write its 2nd utterance takes the whole stage down
    "in_job": "point=feats,utt=2,group=1",
    # every job finished; killed while feats.scp is being written
    "in_merge": "point=merge,group=1",
}


def _data_dir(root: Path, wavs: Path) -> Path:
    d = root / "data" / "train"
    utts = [
        Utterance(f"u{i:02d}", str(wavs / f"u{i:02d}.wav"), TEXTS[i], f"spk{i % 3}")
        for i in range(N_UTTS)
    ]
    write_data_dir(d, utts)
    return d


def _feats_cmd(data_dir: Path, conf: Path) -> list[str]:
    runner = f"{py('x')[0]} {REPO / 'utils' / 'run.py'} --max-jobs-run {NJ}"
    return [
        *py("make_feats.py"),
        "--data-dir", str(data_dir),
        "--feat-config", str(conf),
        "--nj", str(NJ),
        "--cmd", runner,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def feats(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rel_feats")
    wavs = tmp / "wav"
    for i in range(N_UTTS):
        write_wav(wavs / f"u{i:02d}.wav", 0.6 + 0.1 * i, seed=i)
    # the shipped config as is: Kaldi's dither 1.0, noise seeded per utterance (dither_seed)
    conf = REPO / "conf" / "fbank.yaml"
    cfg = FeatureConfig.from_yaml(conf)
    assert cfg.dither == 1.0
    ref = _data_dir(tmp / "ref", wavs)
    make_features_inprocess(ref, cfg, nj=NJ)
    s: dict = {"tmp": tmp, "cfg": cfg, "ref": ref, "killed": {}, "left": {}, "again": {}}
    procs = {}
    for name, spec in FEAT_KILLS.items():
        d = _data_dir(tmp / name, wavs)
        if name == "in_merge":  # every job already finished (in-process, fast)
            for job in prepare_state(d, cfg, NJ):
                run_job(d, job)
        procs[name] = (d, start(_feats_cmd(d, conf), tmp / f"{name}.killed.out", kill=spec))
    for name, (d, p) in procs.items():
        s["killed"][name] = (finish(p), p.text)
        s["left"][name] = {
            "feats.scp": (d / "feats.scp").exists(),
            "tmp": [x.name for x in (d / "data").glob(".*.tmp")],
            "done_jobs": sorted(x.name for x in (d / "data").glob("raw_fbank.*.scp")),
            "logs": "".join(x.read_text() for x in (d / "log").glob("*.log")),
        }
    again = {name: start(_feats_cmd(d, conf), tmp / f"{name}.rerun.out") for name, (d, _) in
             procs.items()}  # fmt: skip
    s["again"] = {name: (finish(p), p.text) for name, p in again.items()}
    s["dirs"] = {name: d for name, (d, _) in procs.items()}
    return s


def check_feature_dir(d: Path, ref: Path | None = None) -> dict[str, np.ndarray]:
    """Every guarantee of a finished stage 1, checked on the files themselves."""
    wav_keys = list(read_table(d / "wav.scp"))
    scp_lines = [x.split(None, 1) for x in (d / "feats.scp").read_text().splitlines()]
    keys = [k for k, _ in scp_lines]
    assert keys == wav_keys  # same count, same order, no duplicate, none missing
    frames = read_table(d / "utt2num_frames")
    assert list(frames) == wav_keys
    loaded = kaldiio.load_scp(str(d / "feats.scp"))
    mats = {k: loaded[k] for k in keys}  # every entry loads
    for k, m in mats.items():
        assert m.shape == (int(frames[k]), 80) and np.isfinite(m).all(), k
    # each ark holds exactly the entries of its job's scp: no half-written or stray entry
    arks = sorted((d / "data").glob("raw_fbank.*.ark"))
    assert len(arks) == NJ
    in_arks: list[str] = []
    for ark in arks:
        for k, m in kaldiio.load_ark(str(ark)):
            in_arks.append(k)
            np.testing.assert_array_equal(m, mats[k])
    assert in_arks == keys
    assert not list((d / "data").glob(".*.tmp"))
    if ref is not None:  # identical to an uninterrupted run's, dither included
        want = kaldiio.load_scp(str(ref / "feats.scp"))
        for k in keys:
            np.testing.assert_array_equal(mats[k], want[k])
    return mats


@pytest.mark.parametrize("name", list(FEAT_KILLS))
def test_sigkilled_feature_stage_rerun_is_complete_and_consistent(feats: dict, name: str) -> None:
    rc, text = feats["killed"][name]
    assert rc == -9, text[-3000:]
    left = feats["left"][name]
    assert "reliability_inject: SIGKILL at" in text + left["logs"]
    # nothing a later stage trusts was left: no feats.scp pointing into a partial ark
    assert not left["feats.scp"]
    if name == "in_job":
        assert len(left["done_jobs"]) < NJ
    else:
        assert len(left["done_jobs"]) == NJ
    rc, text = feats["again"][name]
    assert rc == 0, text[-3000:]
    if name == "in_merge":
        assert f"all {NJ} jobs already done" in text
    check_feature_dir(feats["dirs"][name], feats["ref"])


def _json_cmd(data_dir: Path, out: Path, units: Path, percent: int) -> list[str]:
    return [
        *py("make_json.py"),
        "--data-dir", str(data_dir),
        "--out-dir", str(out),
        "--units", str(units),
        "--json-nj", "2",
        "--num-utt-percent", str(percent),
    ]  # fmt: skip


def test_sigkilled_json_stage_rerun_is_complete_and_consistent(feats: dict) -> None:
    tmp = feats["tmp"]
    d = feats["dirs"]["in_job"]
    check_feature_dir(d)
    units = tmp / "units.txt"
    write_units(units, build_units(TEXTS))
    # an uninterrupted stage 2, and an older complete output (another split) in the target dir
    ref_out, out = tmp / "json_ref", tmp / "json"
    prepare_json(d, ref_out, build_units(TEXTS), 2, 3, log=lambda _: None)
    prepare_json(d, out, build_units(TEXTS), 2, 2, log=lambda _: None)
    old_train1 = (out / "train.1.json").read_bytes()
    # killed when the 2nd json file is closed: train.1.json is new, train.2.json not yet
    rc, text = _run(_json_cmd(d, out, units, 3), tmp / "json.killed.out", "point=json,call=2")
    assert rc == -9 and "SIGKILL at closing json file 2" in text, text[-3000:]
    assert (out / "train.1.json").read_bytes() != old_train1
    # the older train.2.json is still there, but the set is marked incomplete: stage 3
    # refuses a json dir without feature.yaml (written last)
    assert not (out / "feature.yaml").exists()
    with pytest.raises(MismatchError, match="feature.yaml: missing"):
        _load_feature_yaml(out / "feature.yaml")
    rc, text = _run(_json_cmd(d, out, units, 3), tmp / "json.rerun.out", None)
    assert rc == 0, text[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in ref_out.iterdir())
    for n in names:  # byte-identical to the uninterrupted run
        assert filecmp.cmp(out / n, ref_out / n, shallow=False), n
    # and consistent in itself: every utterance in exactly one json, every feat loads
    seen: list[str] = []
    for j in ("train.1.json", "train.2.json", "dev.json"):
        for utt, info in read_utts(out / j).items():
            seen.append(utt)
            mat = kaldiio.load_mat(info["input"][0]["feat"])
            assert list(mat.shape) == info["input"][0]["shape"]
    assert sorted(seen) == list(read_table(d / "wav.scp"))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    shutil.rmtree(ref_out)


def _run(cmd: list[str], out: Path, kill: str | None) -> tuple[int, str]:
    p = start(cmd, out, kill=kill)
    return finish(p), p.text


def test_sigkilled_data_stage_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    """Stage 0 (steps/make_data.py) killed half-way through checking the audio, re-run."""
    wavs = tmp_path / "wav"
    for i in range(N_UTTS):
        write_wav(wavs / f"u{i:02d}.wav", 0.6 + 0.1 * i, seed=i)
    (wavs / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    transcript = tmp_path / "transcript.txt"
    lines = [f"u{i:02d} {t}" for i, t in enumerate(TEXTS[:N_UTTS])] + ["broken 坏", "nowav 无"]
    transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ref, out = tmp_path / "ref", tmp_path / "out"
    make_data_dir(ref, wav_dir=wavs, transcript=transcript)
    cmd = [*py("make_data.py"), "--wav-dir", str(wavs), "--transcript", str(transcript),
           "--out-dir", str(out)]  # fmt: skip
    rc, text = _run(cmd, tmp_path / "killed.out", "point=probe,call=4")
    assert rc == -9 and "SIGKILL at stage 0, probing audio file 4" in text, text
    assert not (out / "wav.scp").exists() and not (out / "rejects.tsv").exists()
    rc, text = _run(cmd, tmp_path / "rerun.out", None)
    assert rc == 0 and f"{N_UTTS} accepted, 2 rejected" in text, text
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names  # no stale key store or temp file
    for n in names:
        assert filecmp.cmp(out / n, ref / n, shallow=False), n
