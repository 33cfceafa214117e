"""steps/make_results.py on fake decode results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import readme_block

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "steps" / "make_results.py"
sys.path.insert(0, str(ROOT / "steps"))

import make_results  # noqa: E402


def _result(decode: Path, set_name: str, model: str, cer: float, n: int = 20) -> None:
    d = decode / set_name / model
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"cer": cer, "wer": None, "n_utts": n}))


@pytest.fixture()
def exp(tmp_path: Path) -> Path:
    decode = tmp_path / "exp" / "decode"
    for model, (t, s) in {
        "onnx_int8": (21.0, 16.5),
        "base": (80.25, 12.0),
        "finetuned": (20.5, 13.25),
        "onnx_fp32": (20.5, 13.3),
    }.items():
        _result(decode, "target_test", model, t, 30)
        _result(decode, "source_test", model, s, 40)
    (tmp_path / "exp" / "stage_seconds.tsv").write_text("0\t3.5\n1\t12\n3\t200\n1\t10\n")
    return tmp_path / "exp"


def test_table_and_json(exp: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--exp-dir", str(exp), "--decode-dir", str(exp / "decode"),
         "--stage-seconds", str(exp / "stage_seconds.tsv")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| set |"))
    assert header == "| set | base | finetuned | onnx_fp32 | onnx_int8 |"
    row = next(line for line in out.splitlines() if line.startswith("| target_test"))
    assert row == "| target_test (30 utts) | 80.25 | 20.50 | 20.50 | 21.00 |"
    rows = [line for line in out.splitlines() if line.startswith("| source_test")]
    assert rows == ["| source_test (40 utts) | 12.00 | 13.25 | 13.30 | 16.50 |"]
    assert "| total | 3.6 min |" in out  # 3.5 + 10 (the re-run of stage 1 wins) + 200 s

    results = json.loads((exp / "results.json").read_text())
    assert results["cer"]["target_test"] == {
        "base": 80.25, "finetuned": 20.5, "onnx_fp32": 20.5, "onnx_int8": 21.0,
    }  # fmt: skip
    assert results["cer"]["source_test"]["onnx_int8"] == 16.5
    assert results["stage_seconds"] == {"0": 3.5, "1": 10.0, "3": 200.0}
    md = (exp / "RESULTS.md").read_text()
    assert "| target_test (30 utts) | 80.25 |" in md and "## Wall time per stage" in md


def test_missing_model_and_no_stage_file(tmp_path: Path) -> None:
    decode = tmp_path / "decode"
    _result(decode, "dev", "base", 50.0)
    _result(decode, "test", "base", 40.0)
    _result(decode, "test", "finetuned", 30.0)
    results = make_results.make_results(tmp_path, decode, tmp_path / "absent.tsv")
    assert results["cer"] == {"dev": {"base": 50.0}, "test": {"base": 40.0, "finetuned": 30.0}}
    assert results["stage_seconds"] == {} and results["n_utts"] == {"dev": 20, "test": 20}
    assert set(results["measured"]) == {"date_utc", "cpus", "machine", "python"}
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| dev (20 utts) | 50.00 | - |" in md
    assert "Wall time" not in md


def test_errors_name_the_file(tmp_path: Path) -> None:
    decode = tmp_path / "decode"
    with pytest.raises(SystemExit, match="does not exist"):
        make_results.make_results(tmp_path, decode)
    bad = decode / "test" / "base" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match=str(bad)):
        make_results.make_results(tmp_path, decode)
    bad.write_text(json.dumps({"cer": 10.0}))
    tsv = tmp_path / "stage_seconds.tsv"
    tsv.write_text("3 seconds\n")
    with pytest.raises(SystemExit, match=f"{tsv}:1"):
        make_results.make_results(tmp_path, decode, tsv)


def test_phrase_recall_table_when_a_list_was_measured(exp: Path) -> None:
    decode = exp / "decode"
    hot = {"file": "hot.txt", "phrases": 9, "occurrences": 40, "false_alarms": 2}
    for model, recalled, biased in (("finetuned", 20, False), ("finetuned_hotwords", 30, True)):
        d = decode / "target_test" / model
        d.mkdir(parents=True, exist_ok=True)
        r = {
            "cer": 20.0,
            "n_utts": 30,
            "hotwords": {
                **hot,
                "recalled": recalled,
                "recall": recalled / 40 * 100,
                "biased": biased,
            },
        }
        (d / "result.json").write_text(json.dumps(r))
    results = make_results.make_results(exp, decode)
    rec = results["phrase_recall"]["target_test"]
    assert rec["finetuned"]["recall"] == 50.0 and rec["finetuned_hotwords"]["recall"] == 75.0
    md = (exp / "RESULTS.md").read_text()
    assert "## Hotword phrase recall (%)" in md
    assert "| target_test | 50.0 (20/40, fa 2) | 75.0* (30/40, fa 2) |" in md
    # the CER table lists the hotword decode next to the plain one
    assert "| set | base | finetuned | finetuned_hotwords | onnx_fp32 | onnx_int8 |" in md


def test_markdown_is_rendered_from_results_json(exp: Path) -> None:
    """README's demo table is this output: the same table as RESULTS.md, read back from the
    results.json the run wrote, with when and where it was measured."""
    make_results.make_results(exp, exp / "decode", exp / "stage_seconds.tsv")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--markdown", str(exp / "results.json")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    md = (exp / "RESULTS.md").read_text()
    assert proc.stdout in md and "| target_test (30 utts) | 80.25 | 20.50 | 20.50 | 21.00 |" in md
    when = json.loads((exp / "results.json").read_text())["measured"]["date_utc"]
    assert f"Measured {when} UTC" in proc.stdout
    assert oct((exp / "results.json").stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    import os

    old = os.umask(0)
    os.umask(old)
    return old


README_NO_RESULTS = (
    "No full demo run has been recorded with the current code yet (`local/demo/results.json` is\n"
    "absent): per-utterance dither seeding changed the features, so earlier figures no longer "
    "apply.\n"
)


def test_readme_demo_figures_are_rendered_from_results_json() -> None:
    """README's demo table is the output of make_results.py --markdown on the committed
    local/demo/results.json, never typed in; without that file README says so."""
    block = readme_block("demo-results", "steps/make_results.py --markdown local/demo/results.json")
    results = ROOT / "local" / "demo" / "results.json"
    if results.is_file():
        assert block == make_results.render_results_json(results)
    else:
        assert block == README_NO_RESULTS
    # no other CER table in README: every figure comes from the block above
    outside = (ROOT / "README.md").read_text(encoding="utf-8").replace(block, "")
    assert "| set | base |" not in outside
