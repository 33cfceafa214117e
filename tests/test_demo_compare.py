"""local/demo/compare_finetune.py: per-setting training yamls and the comparison table, on
fake decode results and tiny checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import readme_block
from model_fixtures import tiny_model_config

from e2e_asr.model import build_model
from e2e_asr.model.checkpoint import save_checkpoint
from e2e_asr.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "local" / "demo"))

import compare_finetune  # noqa: E402

LORA8 = 'train_config.lora={"rank":8,"alpha":16}'


def test_write_config_applies_overrides_and_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "conf" / "lora8.yaml"
    base = ROOT / "conf" / "demo_finetune.yaml"
    compare_finetune.write_config(base, out, [LORA8, "opti_config.lr=0.005"])
    cfg, ref = load_train_config(out), load_train_config(base)
    assert cfg["train_config"]["lora"]["rank"] == 8 and cfg["train_config"]["lora"]["alpha"] == 16
    assert cfg["opti_config"]["lr"] == 0.005
    # everything else as in the demo yaml
    cfg["train_config"]["lora"] = ref["train_config"]["lora"]
    cfg["opti_config"]["lr"] = ref["opti_config"]["lr"]
    assert cfg == ref
    assert compare_finetune.main(["write-config", str(base), str(out), "train_config.rank=8"]) == 1


def _result(path: Path, cer: float) -> None:
    path.mkdir(parents=True)
    (path / "result.json").write_text(json.dumps({"cer": cer, "n_utts": 10}))


def _setting(out: Path, name: str, target: float, source: float, trainable: str) -> int:
    """A finished setting: decode results, stage times, a checkpoint whose optimizer trained
    the parameters under ``trainable``; returns their count."""
    exp = out / name
    _result(exp / "decode" / "target_test", target)
    _result(exp / "decode" / "source_test", source)
    (exp / "stage_seconds.tsv").write_text("3-train\t100\n4-average\t3\n3-train\t20\n")
    mc, cc = tiny_model_config(), {"rate": 0.3}
    model = build_model(mc, cc)
    params = [p for n, p in model.named_parameters() if n.startswith(trainable)]
    opt = torch.optim.Adam(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    payload = {
        "model": model.state_dict(),
        "config": {"model_config": mc, "criterion_config": cc},
        "optimizer": opt.state_dict(),
        "epoch": 20,
    }
    save_checkpoint(exp / "checkpoint.20", payload)
    return sum(p.numel() for p in params)


def test_table_counts_parameters_and_checks_the_goal(tmp_path: Path, capsys) -> None:
    _result(tmp_path / "base" / "decode" / "target_test", 90.0)
    _result(tmp_path / "base" / "decode" / "source_test", 20.0)
    n_full = _setting(tmp_path, "full", 20.0, 30.0, "")  # source rise 10
    n_lora = _setting(tmp_path, "lora8", 21.9, 25.0, "decoder")  # rise 5, target 1.095x
    _setting(tmp_path, "enc_frozen", 22.1, 24.0, "ctc")  # target 1.105x: misses
    _setting(tmp_path, "mix", 21.0, 25.5, "encoder")  # rise 5.5 > 5: misses
    settings = ["full 0", f"lora8 0 {LORA8} opti_config.lr=0.005", "enc_frozen 0", "mix 0.5"]
    args = ["table", "--out-dir", str(tmp_path)]
    for s in settings:
        args += ["--setting", s]
    assert compare_finetune.main(args + ["--conditions", "fine-tuning 2 epochs"]) == 0
    md = (tmp_path / "COMPARE.md").read_text()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "fine-tuning 2 epochs." in md
    data = json.loads((tmp_path / "compare.json").read_text())
    # the table is a function of compare.json (README's block is rendered from it)
    assert compare_finetune.main(["render", str(tmp_path / "compare.json")]) == 0
    assert md.endswith(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["settings"]}
    assert data["base"] == {"target_test": 90.0, "source_test": 20.0}
    assert rows["full"]["trainable"] == n_full == rows["full"]["total"]
    assert rows["lora8"]["trainable"] == n_lora < n_full
    assert rows["lora8"]["train_seconds"] == 120  # both stage-3 runs (a resumed one)
    assert rows["lora8"]["mix_ratio"] == 0 and rows["mix"]["mix_ratio"] == 0.5
    assert [rows[n]["meets_goal"] for n in ("full", "lora8", "enc_frozen", "mix")] == [
        None,
        True,
        False,
        False,
    ]
    assert rows["lora8"]["source_rise"] == pytest.approx(5.0)
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| 90.00 | 20.00 |" in lines["| base model"]
    assert lines["| lora8"].endswith("| 21.90 | 25.00 | +5.00 | yes |")
    assert lines["| full"].endswith("| ref |")
    assert f"`{LORA8}`" in md


def test_table_names_a_missing_result(tmp_path: Path) -> None:
    _result(tmp_path / "base" / "decode" / "target_test", 90.0)
    with pytest.raises(SystemExit, match="source_test/result.json"):
        compare_finetune.main(["table", "--out-dir", str(tmp_path), "--setting", "full 0"])


README_NO_COMPARE = (
    "No comparison has been recorded with the current code yet (`local/demo/compare.json` is "
    "absent).\n"
)


def test_readme_compare_block_is_rendered_from_compare_json() -> None:
    """README's comparison table is `compare_finetune.py render local/demo/compare.json`, the
    compare.json a run of compare_finetune.sh wrote; never typed in."""
    block = readme_block(
        "demo-compare", "local/demo/compare_finetune.py render local/demo/compare.json"
    )
    path = ROOT / "local" / "demo" / "compare.json"
    if path.is_file():
        assert block == compare_finetune.render(json.loads(path.read_text(encoding="utf-8")))
    else:
        assert block == README_NO_COMPARE
