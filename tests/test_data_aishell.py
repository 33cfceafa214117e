"""egs/aishell on a tiny fake AISHELL-1 tree: stages 0-2 with every key accounted for, features
taken from the base model's own config (no --feat-config)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from conftest_data import REPO, read_table, rejects, write_wav

from e2e_asr.data.espnet_json import read_utts

WORDS = ["今天 天气 很 好", "我们 去 公园", "你好 世界", "明天 见"]


def _fake_aishell(root: Path) -> Path:
    corpus = root / "data_aishell"
    lines = []
    i = 0
    for s, spks in (("train", ["S0002", "S0003"]), ("dev", ["S0724"]), ("test", ["S0764"])):
        for spk in spks:
            for j in range(2):
                key = f"BAC009{spk}W{j:04d}"
                write_wav(corpus / "wav" / s / spk / f"{key}.wav", 0.5 + 0.1 * j, seed=i)
                lines.append(f"{key} {WORDS[i % len(WORDS)]}")
                i += 1
    # S0003 as distributed: a tarball holding train/S0003/*.wav
    with tarfile.open(corpus / "wav" / "S0003.tar.gz", "w:gz") as tar:
        tar.add(corpus / "wav" / "train" / "S0003", arcname="train/S0003")
    for p in (corpus / "wav" / "train" / "S0003").iterdir():
        p.unlink()
    (corpus / "wav" / "train" / "S0003").rmdir()
    lines.append("BAC009S0002W9999 没有 音频")  # transcript without audio
    write_wav(corpus / "wav" / "dev" / "S0724" / "BAC009S0724W0500.wav", 0.5)  # no transcript
    (corpus / "transcript").mkdir(parents=True)
    (corpus / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "\n".join(lines) + "\n", encoding="utf-8"
    )
    return corpus


def test_aishell_recipe_stages_0_to_2(tmp_path: Path) -> None:
    from decode_fixtures import write_checkpoint

    corpus = _fake_aishell(tmp_path)
    out = tmp_path / "out"
    base = write_checkpoint(tmp_path / "checkpoint.1")  # 20-bin fbank, its own units
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHON=sys.executable,
    )
    res = subprocess.run(
        [
            "./run.sh",
            "--corpus-dir",
            str(corpus),
            "--output-dir",
            str(out),
            "--stop-stage",
            "2",
            "--nj",
            "1",
            "--json-nj",
            "2",
            "--base-model",
            str(base),
        ],
        cwd=REPO / "egs" / "aishell",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    data = out / "data"
    assert sorted(read_table(data / "train" / "text")) == [
        "BAC009S0002W0000",
        "BAC009S0002W0001",
        "BAC009S0003W0000",
        "BAC009S0003W0001",
    ]
    assert read_table(data / "train" / "text")["BAC009S0002W0000"] == "今天 天气 很 好"
    assert rejects(data / "train") == {"BAC009S0002W9999": "no_audio"}
    assert rejects(data / "dev") == {"BAC009S0724W0500": "no_transcript"}
    assert read_table(data / "test" / "utt2spk") == {
        "BAC009S0764W0000": "S0764",
        "BAC009S0764W0001": "S0764",
    }
    js = out / "preparejson" / "split_train_dev"
    train = {**read_utts(js / "train.1.json"), **read_utts(js / "train.2.json")}
    assert len(train) == 4 and sorted(read_utts(js / "dev.json")) == [
        "BAC009S0724W0000",
        "BAC009S0724W0001",
    ]
    e = train["BAC009S0002W0000"]
    assert e["output"][0]["token"] == "今 天 天 气 很 好"
    assert e["input"][0]["shape"][1] == 20  # the base model's 20-bin fbank
    for name in ("cmvn.ark", "units.txt", "feature.yaml", "oov.txt"):
        assert (js / name).is_file()
    # re-running is safe and skips finished feature jobs
    res2 = subprocess.run(
        [
            "./run.sh",
            "--corpus-dir",
            str(corpus),
            "--output-dir",
            str(out),
            "--stage",
            "1",
            "--stop-stage",
            "1",
            "--nj",
            "1",
            "--base-model",
            str(base),
        ],
        cwd=REPO / "egs" / "aishell",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res2.returncode == 0, res2.stderr
    assert res2.stdout.count("all 1 jobs already done") == 2  # train, dev (test: at stage 6)
