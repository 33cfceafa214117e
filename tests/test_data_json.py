"""Stage 2: ESPnet1 json format, CMVN, units, OOV report, split and clean_data filters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest_data import REPO, make_features_inprocess, read_table, run_step, write_wav

from e2e_asr.data.cmvn import read_cmvn
from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.data.espnet_json import read_utts
from e2e_asr.data.features import FeatureConfig
from e2e_asr.data.jsonprep import JsonPrepError, prepare_json
from e2e_asr.data.split import base_key, dev_keys
from e2e_asr.data.units import read_units
from e2e_asr.model.checkpoint import base_model_info as load_base_model_info

TEXTS = [
    "你好世界",
    "今天天气很好",
    "我爱NLP",
    "鳯凰飞",
    "好",
    "天天向上",
    "世界很大",
    "你好",
    "再见",
    "今天",
]


def _corpus(root: Path, texts=TEXTS, prefix: str = "utt", copies: bool = True) -> Path:
    d = root / f"data_{prefix}"
    utts = []
    for i, text in enumerate(texts):
        wav = write_wav(root / "wav" / f"{prefix}{i}.wav", 0.3 + 0.05 * i, seed=i)
        utts.append(Utterance(f"{prefix}{i:02d}", str(wav), text, f"spk{i % 2}"))
        if copies:
            utts.append(Utterance(f"sp0.9-{prefix}{i:02d}", str(wav), text, f"spk{i % 2}"))
    write_data_dir(d, utts)
    cfg = dataclasses.replace(
        FeatureConfig.from_yaml(REPO / "conf" / "mfcc_hires.yaml"), dither=0.0
    )
    make_features_inprocess(d, cfg, nj=2)
    return d


BASE_UNITS = [
    "<blank>",
    "<unk>",
    "你",
    "好",
    "世",
    "界",
    "今",
    "天",
    "气",
    "很",
    "我",
    "爱",
    "N",
    "L",
    "P",
    "向",
    "上",
    "大",
    "再",
    "见",
    "<sos/eos>",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _corpus(tmp_path_factory.mktemp("c"))


def _ckpt(path: Path, units=BASE_UNITS, feature_config=None) -> Path:
    torch.save({"units": list(units), "feature_config": feature_config, "model": {}}, path)
    return path


def _all_json(out: Path, nj: int) -> dict[str, dict]:
    utts: dict[str, dict] = {}
    for i in range(1, nj + 1):
        part = read_utts(out / f"train.{i}.json")
        assert part, f"train.{i}.json is empty"
        assert not set(part) & set(utts)
        utts.update(part)
    return utts


def test_make_json_with_base_model(corpus: Path, tmp_path: Path) -> None:
    ckpt = _ckpt(
        tmp_path / "base.pt",
        feature_config=FeatureConfig.from_yaml(corpus / "feature.yaml").to_dict(),
    )
    out = tmp_path / "json"
    res = run_step(
        "make_json.py",
        "--data-dir",
        corpus,
        "--out-dir",
        out,
        "--base-model",
        ckpt,
        "--json-nj",
        "2",
        "--num-utt-percent",
        "4",
        "--config",
        REPO / "tests" / "data" / "seed_finetune.yaml",
    )
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    # 鳯凰飞 appears in utt03 and its copy; the report comes before anything else
    assert first.startswith("OOV: 3 units not in the unit list, 6 occurrences, mapped to <unk>: ")
    assert sorted(first.split("<unk>: ", 1)[1].split(", ")) == ["凰 2", "飞 2", "鳯 2"]
    oov = dict(line.split() for line in (out / "oov.txt").read_text(encoding="utf-8").splitlines())
    assert oov == {"鳯": "2", "凰": "2", "飞": "2"}
    # dev = originals 0, 4, 8 (utt00, utt04, utt08); copies of dev utts leave both sets
    dev = read_utts(out / "dev.json")
    assert sorted(dev) == ["utt00", "utt04", "utt08"]
    train = _all_json(out, 2)
    assert "sp0.9-utt00" not in train and "utt03" in train and "sp0.9-utt03" in train
    assert len(train) == 14  # 7 originals + 7 copies
    assert "filtered: dropped: augmented copy of a dev utterance: 3" in res.stdout
    e = train["utt02"]
    frames = int(read_table(corpus / "utt2num_frames")["utt02"])
    assert e["input"] == [
        {"feat": read_table(corpus / "feats.scp")["utt02"], "name": "input1", "shape": [frames, 40]}
    ]
    assert e["output"] == [
        {
            "name": "target1",
            "shape": [5, len(BASE_UNITS)],
            "text": "我爱NLP",
            "token": "我 爱 N L P",
            "tokenid": "10 11 12 13 14",
        }
    ]
    assert e["utt2spk"] == "spk0"
    t = train["utt03"]["output"][0]
    assert t["token"] == "鳯 凰 飞" and t["tokenid"].split()[:2] == ["1", "1"]
    assert read_units(out / "units.txt") == BASE_UNITS
    assert (out / "feature.yaml").read_text() == (corpus / "feature.yaml").read_text()


def test_cmvn_is_kaldi_global_stats_of_train(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "json"
    res = run_step(
        "make_json.py",
        "--data-dir",
        corpus,
        "--out-dir",
        out,
        "--units",
        _units_file(tmp_path),
        "--json-nj",
        "1",
        "--num-utt-percent",
        "4",
    )
    assert res.returncode == 0, res.stderr
    stats = kaldiio.load_mat(str(out / "cmvn.ark"))
    assert stats.dtype == np.float64 and stats.shape == (2, 41)
    train = read_utts(out / "train.1.json")
    feats = np.concatenate([kaldiio.load_mat(e["input"][0]["feat"]) for e in train.values()])
    assert stats[0, -1] == feats.shape[0]
    np.testing.assert_allclose(stats[0, :-1], feats.astype(np.float64).sum(0), rtol=1e-9)
    np.testing.assert_allclose(stats[1, :-1], np.square(feats.astype(np.float64)).sum(0), rtol=1e-9)
    mean, istd = read_cmvn(out / "cmvn.ark")
    np.testing.assert_allclose(mean, feats.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(istd, 1 / feats.std(0), rtol=1e-3)


def test_clean_data_filters_from_top_level_jconfig(corpus: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("jconfig:\n  clean_data: true\n  ilen_min: 30\n  ilen_max: 70\n  olen_max: 3\n")
    out = tmp_path / "json"
    res = run_step(
        "make_json.py",
        "--data-dir",
        corpus,
        "--out-dir",
        out,
        "--units",
        _units_file(tmp_path),
        "--json-nj",
        "1",
        "--num-utt-percent",
        "4",
        "--config",
        cfg,
    )
    assert res.returncode == 0, res.stderr
    kept = {**read_utts(out / "train.1.json"), **read_utts(out / "dev.json")}
    frames = {k: int(v) for k, v in read_table(corpus / "utt2num_frames").items()}
    for utt, e in kept.items():
        assert 30 <= frames[utt] <= 70 and e["output"][0]["shape"][0] <= 3
    assert "ilen < ilen_min 30" in res.stdout and "olen > olen_max 3" in res.stdout
    assert "ilen > ilen_max 70" in res.stdout


def _units_file(tmp_path: Path) -> Path:
    p = tmp_path / "units.txt"
    p.write_text("".join(f"{u} {i}\n" for i, u in enumerate(BASE_UNITS)), encoding="utf-8")
    return p


def test_extend_units_and_given_dev_dir(corpus: Path, tmp_path: Path) -> None:
    dev_dir = _corpus(tmp_path, ["你好", "新词"], prefix="dev", copies=False)
    out = tmp_path / "json"
    res = run_step(
        "make_json.py",
        "--data-dir",
        corpus,
        "--out-dir",
        out,
        "--units",
        _units_file(tmp_path),
        "--json-nj",
        "3",
        "--num-utt-percent",
        "4",
        "--dev-data-dir",
        dev_dir,
        "--extend-units",
    )
    assert res.returncode == 0, res.stderr
    assert "added as new units" in res.stdout.splitlines()[0]
    units = read_units(out / "units.txt")
    assert units[: len(BASE_UNITS) - 1] == BASE_UNITS[:-1] and units[-1] == "<sos/eos>"
    assert set(units[len(BASE_UNITS) - 1 : -1]) == {"鳯", "凰", "飞", "新", "词"}
    assert sorted(read_utts(out / "dev.json")) == ["dev00", "dev01"]
    train = _all_json(out, 3)
    assert len(train) == 20
    out_e = train["utt03"]["output"][0]
    assert [units[int(i)] for i in out_e["tokenid"].split()] == ["鳯", "凰", "飞"]
    assert out_e["shape"] == [3, len(units)]


def test_split_is_deterministic_and_ignores_copies() -> None:
    keys = sorted([f"u{i:03d}" for i in range(100)] + [f"sp1.1-u{i:03d}" for i in range(100)])
    dev = dev_keys(keys, 10)
    assert dev == {f"u{i:03d}" for i in range(0, 100, 10)}
    assert dev_keys(reversed(keys[::-1]), 10) == dev
    assert base_key("aug1-sp0.9-BAC009S0002W0122") == "BAC009S0002W0122"
    assert base_key("sp1-x") == "sp1-x"


def test_mismatched_base_model_features_fail_early(corpus: Path, tmp_path: Path) -> None:
    fb = FeatureConfig.from_yaml(REPO / "conf" / "fbank.yaml").to_dict()
    units, model_feats = load_base_model_info(_ckpt(tmp_path / "b.pt", feature_config=fb))
    assert units == BASE_UNITS and model_feats == fb
    out = tmp_path / "json"
    with pytest.raises(JsonPrepError, match="type: data 'mfcc_hires' vs model 'fbank'"):
        prepare_json(corpus, out, units, 1, 4, model_feature_config=model_feats)
    assert not out.exists()


def test_stages_1_and_2_share_the_feature_rule(corpus: Path, tmp_path: Path) -> None:
    """One verdict (features.feature_mismatch): an option stage 2 used to skip
    (remove_dc_offset) is refused by stage 1's check and by stage 2; dither alone is fine."""
    import subprocess
    import sys

    fb = FeatureConfig.from_yaml(REPO / "conf" / "fbank.yaml")
    ckpt = _ckpt(tmp_path / "b.pt", feature_config=fb.to_dict())
    cmd = [sys.executable, str(REPO / "utils" / "base_feature_config.py"), str(ckpt), "--check"]
    verdicts = {}
    for name, cfg in {
        "dither_only": dataclasses.replace(fb, dither=0.0, dither_seed=3),
        "dc_offset": dataclasses.replace(fb, remove_dc_offset=False),
    }.items():
        conf = tmp_path / f"{name}.yaml"
        conf.write_text(cfg.to_yaml(), encoding="utf-8")
        res = subprocess.run([*cmd, str(conf)], capture_output=True, text=True, check=False)
        verdicts[name] = (res.returncode, res.stderr)
    assert verdicts["dither_only"] == (0, "")
    rc, err = verdicts["dc_offset"]
    assert rc == 1 and "remove_dc_offset: " in err and "False vs base model True" in err
    data_feats = FeatureConfig.from_yaml(corpus / "feature.yaml").to_dict()
    model_feats = {**data_feats, "remove_dc_offset": False, "dither": 0.0}
    with pytest.raises(JsonPrepError, match="remove_dc_offset: data True vs model False"):
        prepare_json(corpus, tmp_path / "json", BASE_UNITS, 1, 4, model_feature_config=model_feats)


def test_json_is_plain_espnet_layout(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "json"
    res = run_step(
        "make_json.py",
        "--data-dir",
        corpus,
        "--out-dir",
        out,
        "--units",
        _units_file(tmp_path),
        "--json-nj",
        "1",
        "--num-utt-percent",
        "2",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "train.1.json").read_text(encoding="utf-8"))
    assert list(data) == ["utts"]
    for e in data["utts"].values():
        assert set(e) == {"input", "output", "utt2spk"}
        assert len(e["output"][0]["tokenid"].split()) == e["output"][0]["shape"][0]


def test_broken_corpus_through_stages_0_to_2(tmp_path: Path) -> None:
    from conftest_data import rejects
    from test_data_prepare import _broken_aishell_corpus

    from e2e_asr.data.prepare import make_data_dir
    from e2e_asr.data.units import build_units
    from e2e_asr.data.validate import DataConfig

    wav, transcript, expected, accepted = _broken_aishell_corpus(tmp_path)
    data = tmp_path / "data"
    make_data_dir(
        data, wav_dir=wav, transcript=transcript, config=DataConfig.from_dict({"max_duration": 2.5})
    )
    make_features_inprocess(data, FeatureConfig.from_yaml(REPO / "conf" / "fbank.yaml"), nj=2)
    units = build_units(read_table(data / "text").values())
    out = tmp_path / "json"
    report = prepare_json(data, out, units, 2, 3, log=lambda _: None)
    train = _all_json(out, 2)
    dev = read_utts(out / "dev.json")
    assert not report.filtered
    # every input key: in the json (train or dev) or in rejects.tsv, never both, never neither
    assert set(train) | set(dev) == accepted and not set(train) & set(dev)
    assert rejects(data) == expected
    audio_keys = {p.stem for p in wav.rglob("*") if p.is_file()}
    text_keys = {
        line.split()[0] for line in transcript.read_bytes().decode("utf-8", "replace").splitlines()
    }
    assert audio_keys | text_keys == accepted | set(expected)
