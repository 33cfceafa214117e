"""Token timestamps and confidences: CTC forced alignment on hand-built posteriors, and the
transcription command's ctm/json output on the tiny exported model."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from decode_fixtures import exported, write_wavs
from model_fixtures import one_thread  # noqa: F401  (autouse fixture)

from e2e_asr.decode.alignment import ctc_forced_align, refine_spans, token_times

V = 6


def _lp(frames: list[dict[int, float]]) -> np.ndarray:
    lp = np.full((len(frames), V), 1e-3)
    for t, f in enumerate(frames):
        for tok, p in f.items():
            lp[t, tok] = p
        lp[t, 0] += max(0.0, 1.0 - lp[t].sum())
    return np.log(lp / lp.sum(axis=1, keepdims=True))


def test_forced_alignment_follows_the_posteriors() -> None:
    # blank, 2 2, blank, 3, blank blank, 3 (a repeat needs the blank in between)
    lp = _lp([{}, {2: 0.9}, {2: 0.8}, {}, {3: 0.9}, {}, {}, {3: 0.7}])
    path = ctc_forced_align(lp, [2, 3, 3])
    assert path.tolist() == [-1, 0, 0, -1, 1, -1, -1, 2]
    # a hypothesis token the posteriors hardly support still gets its frame
    path = ctc_forced_align(lp, [2, 4, 3])
    assert sorted(set(path.tolist()) - {-1}) == [0, 1, 2]
    # too many tokens for the frames: not alignable
    assert ctc_forced_align(lp[:2], [2, 3, 3]) is None
    assert ctc_forced_align(lp[:2], [2, 2]) is None  # needs 2 + 1 blank frames
    assert ctc_forced_align(lp[:3], [2, 2]).tolist() == [0, -1, 1]
    assert ctc_forced_align(lp[:3], [2, 3]) is not None


def test_token_times_and_confidences() -> None:
    lp = _lp([{}, {2: 0.9}, {2: 0.8}, {}, {3: 0.9}, {}, {}, {4: 0.3, 3: 0.25}])
    tt = token_times(lp, [2, 3, 4], frame_seconds=0.04)
    assert [t.token for t in tt] == [2, 3, 4]
    assert [round(t.start, 3) for t in tt] == [0.04, 0.16, 0.28]
    assert [round(t.duration, 3) for t in tt] == [0.08, 0.04, 0.04]
    conf = [t.confidence for t in tt]
    assert conf[0] == pytest.approx((0.9 + 0.8) / 2, abs=0.01)
    assert conf[1] == pytest.approx(0.9, abs=0.01)
    assert conf[2] < 0.35  # an uncertain token gets a low confidence
    # unalignable: evenly spread, confidence 0
    tt = token_times(lp[:2], [2, 3, 4], frame_seconds=0.04)
    assert [t.confidence for t in tt] == [0.0, 0.0, 0.0] and tt[-1].start > tt[0].start


def test_spikes_are_widened_to_the_speech_around_them() -> None:
    # 10 ms frames: silence, a word at frames 10-29, silence, two joined sounds at 50-89
    energy = np.full(100, 1.0)
    energy[10:30] = 10.0
    energy[50:90] = 10.0
    spans = refine_spans([(20, 24), (60, 64), (80, 84)], energy)
    # bounded by silence on both sides (within the 3-frame smoothing of the energy)
    assert abs(spans[0][0] - 10) <= 1 and abs(spans[0][1] - 30) <= 1
    assert abs(spans[1][0] - 50) <= 1 and abs(spans[2][1] - 90) <= 1
    assert spans[1][1] == spans[2][0] == (64 + 80 + 1) // 2  # joined: the midpoint
    # through token_times: 4x subsampling, spikes at encoder frames 5 and 15
    lp = _lp([{2: 0.9} if t == 5 else {3: 0.9} if t == 15 else {} for t in range(25)])
    tt = token_times(lp, [2, 3], frame_seconds=0.04, energy=energy, subsampling=4)
    assert tt[0].start == pytest.approx(0.10, abs=0.011)
    assert tt[1].start == pytest.approx(0.50, abs=0.011)
    assert tt[0].duration == pytest.approx(0.20, abs=0.021)  # frames 10 .. 30


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return exported(tmp_path_factory.mktemp("ts_model"))


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    code = runpy.run_path(str(REPO / "steps" / "transcribe.py"))["main"](args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("mode", ["ctc_greedy", "attention_rescoring"])
def test_transcribe_ctm_and_json(export_dir: Path, tmp_path: Path, capsys, mode: str) -> None:
    wavs = write_wavs(tmp_path, durations=(1.3, 2.1))
    base = ["--model-dir", str(export_dir), "--backend", "onnx", "--threads", "1"]
    base += ["--mode", mode, str(wavs[1]), str(wavs[0])]
    code, text_out, err = _main(base, capsys)
    assert code == 0, err
    texts = dict((ln.split(" ", 1) + [""])[:2] for ln in text_out.splitlines())
    code, json_out, err = _main(base + ["--output-format", "json"], capsys)
    assert code == 0, err
    objs = [json.loads(ln) for ln in json_out.splitlines()]
    assert [o["utt"] for o in objs] == ["utt1", "utt0"]  # input order
    for o, dur in zip(objs, (2.1, 1.3), strict=True):
        assert o["text"] == texts[o["utt"]]
        assert "".join(t["token"] for t in o["tokens"]) == o["text"].replace(" ", "")
        starts = [t["start"] for t in o["tokens"]]
        assert starts == sorted(starts)
        assert all(
            0 <= t["start"] and t["start"] + t["duration"] <= dur + 0.05 for t in o["tokens"]
        )
        assert all(0.0 <= t["confidence"] <= 1.0 for t in o["tokens"])
    code, ctm_out, err = _main(base + ["--output-format", "ctm"], capsys)
    assert code == 0, err
    rows = [ln.split() for ln in ctm_out.splitlines()]
    assert len(rows) == sum(len(o["tokens"]) for o in objs)
    for r in rows:  # Kaldi CTM: utt channel start duration token confidence
        assert len(r) == 6 and r[1] == "1"
        float(r[2]), float(r[3]), float(r[5])
    want = [(o["utt"], t["token"]) for o in objs for t in o["tokens"]]
    assert [(r[0], r[4]) for r in rows] == want
