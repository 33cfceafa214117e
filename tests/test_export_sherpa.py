"""The sherpa-onnx model of the export: it loads in sherpa-onnx as is and decodes like our own
ONNX Runtime CTC greedy path, on a tiny model trained on spoken digits (espeak-ng)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from model_fixtures import one_thread  # noqa: F401  (autouse fixture)
from trained_fixtures import digits_model, espeak_available

from e2e_asr.data.features import FeatureConfig
from e2e_asr.decode.recognizer import Recognizer
from e2e_asr.decode.scoring import score_corpus
from e2e_asr.export.sherpa import (
    SherpaExportError,
    sherpa_feature_options,
    sherpa_recognizer,
    sherpa_transcribe,
)

pytestmark = pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (tools/setup.sh)")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_model(tmp_path_factory.mktemp("digits"))


def test_sherpa_model_files_names_and_metadata(digits) -> None:
    d = digits.export_dir / "sherpa-onnx"
    for name in ("model.onnx", "model.int8.onnx", "tokens.txt", "feature_options.json"):
        assert (d / name).is_file(), name
    m = onnx.load(str(d / "model.onnx"))
    assert [i.name for i in m.graph.input] == ["x", "x_lens"]
    assert [o.name for o in m.graph.output] == ["log_probs", "log_probs_lens"]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["vocab_size"] == "13" and meta["subsampling_factor"] == "4"
    assert meta["model_type"] == "wenet_ctc" and "version" in meta
    tokens = (d / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[0] == "<blank> 0" and len(tokens) == 13
    opts = json.loads((d / "feature_options.json").read_text())
    # Kaldi's settings, not sherpa-onnx's defaults (high_freq -400, snip_edges false)
    assert opts["high_freq"] == 0.0 and opts["snip_edges"] is True and opts["dither"] == 0.0
    assert opts["normalize_samples"] is False  # int16-range samples, as our features
    meta_json = json.loads((digits.export_dir / "metadata.json").read_text())
    assert meta_json["sherpa_onnx"]["files"] == ["model.onnx", "model.int8.onnx"]


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8"])
def test_sherpa_decodes_like_onnxruntime_ctc_greedy(digits, quantized: bool) -> None:
    ours = Recognizer.from_model_dir(
        digits.export_dir, "onnx", quantized=quantized, num_threads=1, mode="ctc_greedy"
    )
    hyp_ours = dict(ours.transcribe(digits.test))
    rec = sherpa_recognizer(digits.export_dir, quantized=quantized, num_threads=1)
    hyp_sherpa = dict(sherpa_transcribe(rec, digits.test, sample_rate=16000))
    same = sum(hyp_ours[k] == hyp_sherpa[k] for k in digits.refs) / len(digits.refs)
    cer_ours = score_corpus(digits.refs, hyp_ours).cer.error_rate
    cer_sherpa = score_corpus(digits.refs, hyp_sherpa).cer.error_rate
    print(f"identical {same:.0%}; CER ours {cer_ours:.2f} sherpa {cer_sherpa:.2f}")
    assert cer_ours < 50.0, hyp_ours  # the model has learnt the digits: a meaningful check
    assert same >= 0.99, (hyp_ours, hyp_sherpa)
    assert abs(cer_ours - cer_sherpa) <= 0.1


def test_sherpa_default_fbank_options_would_not_match(digits) -> None:
    """What the feature options are worth: from_wenet_ctc alone (high_freq -400, no
    snip_edges) decodes differently, so the comparison above would catch a feature mismatch."""
    import sherpa_onnx

    from e2e_asr.export.sherpa import SHERPA_DIR, sherpa_transcribe

    d = digits.export_dir / SHERPA_DIR
    rec = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(
        model=str(d / "model.onnx"), tokens=str(d / "tokens.txt"), num_threads=1
    )
    plain = dict(sherpa_transcribe(rec, digits.test))
    ours = dict(
        Recognizer.from_model_dir(
            digits.export_dir, "onnx", num_threads=1, mode="ctc_greedy"
        ).transcribe(digits.test)
    )
    assert sum(plain[k] != ours[k] for k in digits.refs) >= 2


def test_features_sherpa_cannot_make_are_refused(digits, tmp_path: Path) -> None:
    with pytest.raises(SherpaExportError, match="mfcc_hires"):
        sherpa_feature_options(FeatureConfig(type="mfcc_hires", num_mel_bins=40, num_ceps=40))
    with pytest.raises(SherpaExportError, match="use_energy"):
        sherpa_feature_options(FeatureConfig(use_energy=True))
    opts = sherpa_feature_options(FeatureConfig(high_freq=-400.0, snip_edges=False))
    assert opts["high_freq"] == -400.0 and opts["snip_edges"] is False
    # the export of an MFCC model goes on without a sherpa-onnx model and says why
    from e2e_asr.export.sherpa import write_sherpa_model

    msgs: list[str] = []
    cfg = FeatureConfig(type="mfcc_hires", num_mel_bins=40, num_ceps=40)
    assert (
        write_sherpa_model(tmp_path, ["<blank>", "<unk>", "<sos/eos>"], cfg, 4, msgs.append) is None
    )
    assert "no sherpa-onnx model" in msgs[0] and not (tmp_path / "sherpa-onnx").exists()
