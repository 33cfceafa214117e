"""Stage 6 of run.sh with a hotword list, on the tiny digits model (tests/trained_fixtures.py):
a `finetuned_hotwords` decode next to the usual ones, the list's recall for every decode, and
the recall table in RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from conftest import run_cmd
from trained_fixtures import digits_model, espeak_available

from e2e_asr.data.datadir import Utterance, write_data_dir

pytestmark = pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (tools/setup.sh)")


def test_stage6_decodes_with_hotwords_and_reports_recall(tmp_path_factory, tmp_path: Path) -> None:
    digits = digits_model(tmp_path_factory.mktemp("digits"))
    wavs = tmp_path / "wav"
    wavs.mkdir()
    utts = []
    for key, samples in digits.test:
        sf.write(wavs / f"{key}.wav", samples, 16000, subtype="PCM_16")
        utts.append(Utterance(key, str(wavs / f"{key}.wav"), digits.refs[key], key))
    write_data_dir(tmp_path / "out/data/test", utts)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "export").symlink_to(digits.export_dir)
    # two-digit phrases said in the test set, one of them with its own score
    phrases = sorted({t[:2] for t in digits.refs.values() if len(t) >= 2})[:5]
    hot = tmp_path / "hot.txt"
    hot.write_text("# digits\n" + "\n".join(phrases) + " :3.0\n", encoding="utf-8")
    proc = run_cmd(
        ["./run.sh", "--stage", "6", "--stop-stage", "6", "--base-model", str(digits.checkpoint),
         "--output-dir", str(tmp_path / "out"), "--exp-dir", str(exp), "--test-sets",
         "test:unused:unused", "--decode-base", "false", "--decode-mode", "ctc_prefix_beam",
         "--nj", "1", "--hotwords", str(hot), "--hotword-score", "2.5"],
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    results = json.loads((exp / "results.json").read_text())
    assert set(results["cer"]["test"]) == {
        "finetuned", "finetuned_hotwords", "onnx_fp32", "onnx_int8"
    }  # fmt: skip
    recall = results["phrase_recall"]["test"]
    assert set(recall) == set(results["cer"]["test"])
    assert recall["finetuned_hotwords"]["biased"] and not recall["finetuned"]["biased"]
    assert recall["finetuned"]["occurrences"] >= len(phrases)
    # biasing towards phrases that were said cannot recall fewer of them
    assert recall["finetuned_hotwords"]["recalled"] >= recall["finetuned"]["recalled"]
    used = json.loads((exp / "decode/test/finetuned_hotwords/result.json").read_text())
    assert used["decode_config"]["hotword_score"] == 2.5
    assert used["decode_config"]["hotwords"] == str(hot)
    assert "## Hotword phrase recall (%)" in (exp / "RESULTS.md").read_text()
