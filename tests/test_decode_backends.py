"""The same search over the torch model and the ONNX graphs; recognizer and CLIs end to end."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from decode_fixtures import exported, write_wavs

from e2e_asr.decode.config import MODES
from e2e_asr.decode.recognizer import Recognizer, RecognizerError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Recognizers here run on one thread (the CI box is shared); restore torch's setting."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return exported(tmp_path_factory.mktemp("decode_model"))


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    return write_wavs(tmp_path_factory.mktemp("wavs"))


def _feats(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        (
            f"u{i}",
            (rng.standard_normal((int(rng.integers(20, 260)), 20)) * 3 + 8).astype(np.float32),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("mode", MODES)
def test_torch_and_onnx_give_identical_hypotheses(export_dir: Path, mode: str) -> None:
    items = _feats(4)
    # maxlenratio bounds the attention search: a random model rarely chooses to stop
    kw = {"mode": mode, "batch_size": 3, "maxlenratio": 0.3}
    t = Recognizer.from_model_dir(export_dir, "torch", num_threads=1, **kw)
    o = Recognizer.from_model_dir(export_dir, "onnx", num_threads=1, **kw)
    th, oh = t.decode_features(items), o.decode_features(items)
    assert th == oh
    assert any(th)  # not trivially empty


def test_batching_does_not_change_results(export_dir: Path) -> None:
    items = _feats(4, seed=2)
    r1 = Recognizer.from_model_dir(export_dir, "onnx", num_threads=1, batch_size=1).decode_features(
        items
    )
    r4 = Recognizer.from_model_dir(export_dir, "onnx", num_threads=1, batch_size=4).decode_features(
        items
    )
    assert r1 == r4


def test_short_and_long_inputs(export_dir: Path) -> None:
    rec = Recognizer.from_model_dir(export_dir, "onnx", mode="ctc_greedy")
    short = ("tiny", np.zeros((5, 20), np.float32))  # < 7 frames: no encoder frame
    assert rec.decode_features([short, _feats(1)[0]])[0] == []
    with pytest.raises(RecognizerError, match="long.*split"):
        rec.decode_features([("huge", np.zeros((rec.max_frames + 1, 20), np.float32))])
    with pytest.raises(RecognizerError, match="needs --backend onnx"):
        Recognizer.from_model_dir(export_dir, "torch", quantized=True)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, cwd=REPO
    )


def _main(script: str, args: list[str], capsys) -> tuple[int, str, str]:
    """Run a steps/ script's main() in this process (an interpreter start costs seconds)."""
    code = runpy.run_path(str(REPO / "steps" / script))["main"](args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_transcribe_cli_both_backends(export_dir: Path, wavs: list[Path], capsys) -> None:
    # one real command line (shebang-free invocation as run.sh does), the rest in-process
    r = _run(
        "steps/transcribe.py",
        "--model-dir",
        str(export_dir),
        "--backend",
        "torch",
        "--threads",
        "1",
        str(wavs[1]),
        str(wavs[0]),
    )
    assert r.returncode == 0, r.stderr
    torch_lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in torch_lines] == ["utt1", "utt0"]  # input order, basenames
    code, out, err = _main(
        "transcribe.py",
        [
            "--model-dir",
            str(export_dir),
            "--backend",
            "onnx",
            "--threads",
            "1",
            str(wavs[1]),
            str(wavs[0]),
        ],
        capsys,
    )
    assert code == 0, err
    assert out.splitlines() == torch_lines
    scp = wavs[0].parent / "wav.scp"
    scp.write_text(f"b {wavs[0]}\na {wavs[1]}\nbad {wavs[0].parent / 'missing.wav'}\n")
    code, out, err = _main(
        "transcribe.py",
        [
            "--model-dir",
            str(export_dir),
            "--backend",
            "onnx",
            "--quantized",
            "--threads",
            "1",
            "--mode",
            "ctc_prefix_beam",
            "--wav-scp",
            str(scp),
        ],
        capsys,
    )
    assert code == 1  # the missing file
    assert [ln.split()[0] for ln in out.splitlines()] == ["b", "a", "bad"]
    assert "bad:" in err


def test_decode_and_score_cli(export_dir: Path, wavs: list[Path], tmp_path: Path, capsys) -> None:
    data = tmp_path / "test"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec {wavs[1]}\n")
    (data / "segments").write_text("s1 rec 0.0 1.0\ns2 rec 1.0 -1\n")
    (data / "text").write_text("s1 一二三\ns2 四五\n")
    out = tmp_path / "decode" / "test" / "onnx_fp32"
    code, stdout, err = _main(
        "decode.py",
        [
            "--model-dir",
            str(export_dir),
            "--backend",
            "onnx",
            "--threads",
            "1",
            "--data-dir",
            str(data),
            "--out-dir",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    hyps = dict(
        ln.split(maxsplit=1) if " " in ln else (ln, "")
        for ln in (out / "hyp.txt").read_text().splitlines()
    )
    assert set(hyps) == {"s1", "s2"} and res["n_utts"] == 2 and res["ref_units"] == 5
    assert res["mode"] == "attention_rescoring" and res["failed"] == 0
    per_utt = (out / "per_utt.txt").read_text()
    assert "id: (s1)" in per_utt and "Scores: (#C #S #D #I)" in per_utt
    assert "CER" in stdout
    code, stdout, _ = _main(
        "score.py", ["--ref", str(data / "text"), "--hyp", str(out / "hyp.txt")], capsys
    )
    assert code == 0 and f"CER {res['cer']:.2f}%" in stdout
    code, stdout, _ = _main("score.py", ["--table", str(out)], capsys)
    assert code == 0 and "| test (2 utts) |" in stdout and "onnx_fp32" in stdout  # cer_table


def test_recognizer_transcribe_api(export_dir: Path, wavs: list[Path]) -> None:
    import soundfile as sf

    rec = Recognizer.from_model_dir(export_dir, "onnx", num_threads=1, mode="ctc_greedy")
    utts = [(p.stem, sf.read(p, dtype="float32")[0]) for p in reversed(wavs)]
    out = rec.transcribe(utts)
    assert [k for k, _ in out] == ["utt1", "utt0"]
    assert all(isinstance(t, str) and "<sos/eos>" not in t for _, t in out)
