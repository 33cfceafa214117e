"""The whole recipe at toy scale: `./run.sh` on the embedded demo (stage -1 .. 6), with a
handful of synthetic utterances, a tiny model and one epoch each for base and fine-tuning."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import run_cmd

from e2e_asr.data.datadir import read_kv
from e2e_asr.decode.scoring import score_corpus

TOY_CORPUS = (
    "--num-source-train 16 --num-source-dev 3 --num-source-test 4 "
    "--num-target-train 12 --num-target-dev 3 --num-target-test 4"
)


def test_run_sh_demo_pipeline_at_toy_scale(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    args = [
        "./run.sh",
        "--demo-dir",
        str(tmp_path / "demo"),
        "--output-dir",
        str(tmp_path / "out"),
        "--exp-dir",
        str(exp),
        "--nj",
        "1",
        "--json-nj",
        "1",
        "--demo-corpus-opts",
        TOY_CORPUS,
        "--demo-base-epochs",
        "1",
        "--demo-base-config",
        "tests/data/tiny_train.yaml",
        "--train-config",
        "tests/data/tiny_train.yaml",
        "--demo-finetune-epochs",
        "1",
        "--decode-mode",
        "ctc_greedy",
    ]
    started = time.monotonic()
    proc = run_cmd(args, timeout=900)
    took = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    print(f"toy pipeline took {took:.0f} s")

    for n in range(-1, 7):
        assert f"==== stage {n}:" in proc.stdout, f"stage {n} did not run"
    # epoch numbering continues from the base model (checkpoint.1 -> checkpoint.2)
    assert (tmp_path / "demo/base/checkpoint.1").is_file()
    assert (exp / "checkpoint.2").is_file() and not (exp / "checkpoint.1").exists()
    for name in (
        "model.avg",
        "export/encoder.onnx",
        "export/encoder.int8.onnx",
        "export/decoder.onnx",
        "export/model.pt",
        "RESULTS.md",
        "train_curves.png",
    ):
        assert (exp / name).is_file(), name

    results = json.loads((exp / "results.json").read_text())
    assert set(results["cer"]) == {"dev", "target_test", "source_test"}
    # stage 6's stated goal, checked by the stage itself (score.py --agree exits 1 below it):
    # ONNX fp32 gives PyTorch's hypothesis on >= 99% of utterances, for every set
    assert proc.stdout.count("required >= 99%: ok") == 3, proc.stdout[-3000:]
    for set_name, models in results["cer"].items():
        assert set(models) == {"base", "finetuned", "onnx_fp32", "onnx_int8"}
        refs = read_kv(tmp_path / "out" / "data" / set_name / "text", allow_empty_value=True)
        for model, cer in models.items():
            # each figure is the corpus CER of that model's hyp.txt against the references
            hyps = read_kv(exp / "decode" / set_name / model / "hyp.txt", allow_empty_value=True)
            assert cer == round(score_corpus(refs, hyps).cer.error_rate, 4), (set_name, model)
        # fewer than 100 utterances a set: >= 99% agreement means every hypothesis is equal
        assert len(refs) < 100 and models["onnx_fp32"] == models["finetuned"], models
    assert {"-1-demo", "3-train", "6-decode"} <= set(results["stage_seconds"])

    # a second run finds everything cached: the base model is not retrained
    again = run_cmd(args + ["--stop-stage", "-1"], timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "base model cached" in again.stdout
