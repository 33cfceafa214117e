"""Waveform augmentation copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest_data import read_table, run_step, write_wav

from e2e_asr.data.augment import AugmentConfig, augment_data_dir
from e2e_asr.data.datadir import Utterance, write_data_dir
from e2e_asr.data.split import base_key


def _src(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    utts = [
        Utterance(
            f"S1-u{i}",
            str(write_wav(tmp_path / f"u{i}.wav", 1.0, seed=i)),
            "你好",
            "S1",
            duration=1.0,
        )
        for i in range(2)
    ]
    write_data_dir(d, utts)
    (d / "rejects.tsv").write_text("bad\tempty_audio: x\n")
    return d


def test_all_effects_and_keys(tmp_path: Path) -> None:
    src = _src(tmp_path)
    write_wav(tmp_path / "noise" / "n.wav", 0.3, seed=9)
    cfg = tmp_path / "aug.yaml"
    cfg.write_text(f"""
speed: {{prob: 1.0, factors: [0.9, 1.1]}}
noise: {{prob: 1.0, noise_dir: {tmp_path / "noise"}, min_snr_dB: 10, max_snr_dB: 10}}
reverb: {{prob: 1.0}}
volume: {{prob: 1.0, min_gain_dBFS: -6, max_gain_dBFS: -6}}
shift: {{prob: 1.0}}
resample: {{prob: 1.0, new_sample_rate: [8000]}}
""")
    out = tmp_path / "aug"
    res = run_step("augment_data.py", "--data-dir", src, "--out-dir", out, "--config", cfg)
    assert res.returncode == 0, res.stderr
    text = read_table(out / "text")
    keys = sorted(text)
    expect = sorted(
        [
            f"{p}S1-u{i}"
            for i in range(2)
            for p in ("", "sp0.9-", "sp1.1-", "aug1-", "aug1-sp0.9-", "aug1-sp1.1-")
        ]
    )
    assert keys == expect
    assert {base_key(k) for k in keys} == {"S1-u0", "S1-u1"}
    dur = {k: float(v) for k, v in read_table(out / "utt2dur").items()}
    assert dur["sp0.9-S1-u0"] == pytest.approx(1 / 0.9, abs=0.01)
    assert dur["sp1.1-S1-u0"] == pytest.approx(1 / 1.1, abs=0.01)
    assert read_table(out / "utt2spk")["sp0.9-S1-u0"] == "sp0.9-S1"
    for effect in ("noise", "reverb", "volume", "shift", "resample"):
        assert f"effect {effect}: 6" in res.stdout
    orig, _ = sf.read(read_table(out / "wav.scp")["S1-u0"])
    augd, _ = sf.read(read_table(out / "wav.scp")["aug1-S1-u0"])
    assert len(augd) == len(orig)
    # -6 dB volume after power-preserving reverb/noise: about half the RMS
    rms = np.sqrt(np.mean(augd**2)) / np.sqrt(np.mean(orig**2))
    assert 0.35 < rms < 0.75
    # resampled through 8 kHz: nothing left above 4 kHz
    spec = np.abs(np.fft.rfft(augd))
    assert spec[len(spec) // 2 + 50 :].sum() < 0.02 * spec.sum()
    assert (out / "rejects.tsv").read_text() == "bad\tempty_audio: x\n"
    first = {p.name: p.read_bytes() for p in (out / "wav").iterdir()}
    augment_data_dir(src, out, AugmentConfig.from_yaml(cfg))  # in-process: no second startup
    assert {p.name: p.read_bytes() for p in (out / "wav").iterdir()} == first  # seeded per key


def test_no_effect_drawn_makes_no_copy(tmp_path: Path) -> None:
    src = _src(tmp_path)
    cfg = AugmentConfig.from_dict(
        {
            "speed": {"factors": []},
            "noise": {"prob": 0},
            "reverb": {"prob": 0},
            "volume": {"prob": 0},
            "shift": {"prob": 0},
        }
    )
    counts = augment_data_dir(src, tmp_path / "out", cfg)
    assert counts["original"] == 2 and counts["no effect drawn (no copy)"] == 2
    assert sorted(read_table(tmp_path / "out" / "text")) == ["S1-u0", "S1-u1"]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="noise_dirr"):
        AugmentConfig.from_dict({"noise": {"noise_dirr": "x"}})
    with pytest.raises(ValueError, match="prob"):
        AugmentConfig.from_dict({"volume": {"prob": 2}})
    with pytest.raises(ValueError, match="1.0"):
        AugmentConfig.from_dict({"speed": {"factors": [1.0]}})


def test_shipped_config_loads() -> None:
    from conftest_data import REPO

    cfg = AugmentConfig.from_yaml(REPO / "conf" / "augment.yaml")
    assert cfg.speed.factors == [0.9, 1.1] and cfg.noise.prob == 0.5 and cfg.reverb.prob == 0.2


def test_segmented_source(tmp_path: Path) -> None:
    from e2e_asr.data.audio import load_audio
    from e2e_asr.data.datadir import Segment

    rec = write_wav(tmp_path / "rec.wav", 2.0, seed=3)
    src = tmp_path / "data"
    write_data_dir(
        src,
        [
            Utterance("rec-a", str(rec), "一", "A", Segment("rec", 0.0, 1.0)),
            Utterance("rec-b", str(rec), "二", "A", Segment("rec", 1.0, 2.0)),
        ],
    )
    cfg = AugmentConfig.from_dict(
        {
            "speed": {"factors": [1.1]},
            "noise": {"prob": 0},
            "reverb": {"prob": 0},
            "volume": {"prob": 0},
            "shift": {"prob": 0},
        }
    )
    out = tmp_path / "out"
    augment_data_dir(src, out, cfg)
    segs = read_table(out / "segments")
    assert segs["rec-b"] == "rec 1.000 2.000"
    assert segs["sp1.1-rec-b"] == "sp1.1-rec-b 0.000 -1.000"
    wavs = read_table(out / "wav.scp")
    assert sorted(wavs) == ["rec", "sp1.1-rec-a", "sp1.1-rec-b"]
    y = load_audio(wavs["sp1.1-rec-b"])
    assert abs(len(y) - 16000 / 1.1) < 3  # made from the 1 s segment, not the recording
