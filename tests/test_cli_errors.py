"""A user's error ends in one line; E2E_ASR_DEBUG=1 adds its traceback (e2e_asr.cli, the one
place that formats them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, repo_files, run_cmd

from e2e_asr.cli import DEBUG_ENV, report_error


def test_report_error_one_line_and_traceback_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def fails() -> None:
        raise FileNotFoundError("/data/x.txt not found")

    for value in ("", "0", "false"):
        monkeypatch.setenv(DEBUG_ENV, value)
        try:
            fails()
        except FileNotFoundError as exc:
            assert report_error("make_data.py", exc) == 1
        assert capsys.readouterr().err == "make_data.py: error: /data/x.txt not found\n"
    monkeypatch.setenv(DEBUG_ENV, "1")
    try:
        fails()
    except FileNotFoundError as exc:
        report_error("plan", exc, label=None, context="--base-model: ")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):" and "in fails" in "\n".join(err)
    assert err[-1] == "plan: --base-model: /data/x.txt not found"


def _run_sh(tmp_path: Path):
    return run_cmd(
        ["./run.sh", "--wav-dir", str(tmp_path), "--transcript", str(tmp_path / "t.txt"),
         "--base-model", str(REPO / "conf" / "decode.yaml"), "--exp-dir", str(tmp_path)]
    )  # fmt: skip


def test_run_sh_user_error_is_one_line_and_debug_flag_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    plain = _run_sh(tmp_path)
    assert plain.returncode == 1
    line = f"./run.sh: --base-model: checkpoint {REPO / 'conf' / 'decode.yaml'}: "
    assert plain.stderr.startswith(line) and "not a PyTorch checkpoint" in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    monkeypatch.setenv(DEBUG_ENV, "1")
    debug = _run_sh(tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last):" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_steps_report_errors_through_the_one_formatter() -> None:
    # a caught error printed by hand would not honour E2E_ASR_DEBUG
    scripts = repo_files("steps/*.py", "utils/*.py", "local/*.py", "src/e2e_asr/*.py",
                         "egs/*/local/*.py")  # fmt: skip
    by_hand = re.compile(r"print\(f?[\"'][^\"']*: (error|PARITY FAILED): \{(e|exc|err)\}")
    offenders = [
        str(p.relative_to(REPO)) for p in scripts if by_hand.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, offenders


def test_launch_train_turns_torchrun_reports_into_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rank = tmp_path / "rank.py"
    rank.write_text("import sys\nprint('rank: error: no json', file=sys.stderr)\nsys.exit(3)\n")
    cmd = ["launch_train.py", "--standalone", "--nproc-per-node", "1", str(rank),
           "--exp-dir", str(tmp_path / "exp")]  # fmt: skip
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    out = run_cmd(cmd, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "rank: error: no json",
        f"train: rank 0 failed (exit code 3); its error is above and in {tmp_path}/exp/train.log "
        "(E2E_ASR_DEBUG=1 shows torchrun's report)",
    ], out.stderr
    monkeypatch.setenv(DEBUG_ENV, "1")
    out = run_cmd(cmd, timeout=120)
    assert out.returncode != 0 and "ChildFailedError" in out.stderr
