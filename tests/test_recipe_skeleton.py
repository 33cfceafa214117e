"""The recipe skeleton: parse_options.sh, the job runner and run.sh's option handling."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from conftest import REPO, repo_files, run_cmd

RECIPE_VARS = (
    "stage stop_stage wav_dir transcript output_dir exp_dir base_model train_config "
    "num_utt_percent json_nj nj num_gpu epochs avg_start avg_end"
).split()


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "recipe.sh"
    script.write_text(
        textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        json_nj=8
        use_gpu=false
        exp_dir=exp/a
        recipe_vars=(json_nj use_gpu exp_dir)
        recipe_stages=("0: data" "1: features")
        help_message="Usage: recipe.sh [options]"
        . {REPO}/utils/parse_options.sh
        echo "json_nj=$json_nj use_gpu=$use_gpu exp_dir=$exp_dir rest=$*"
        """)
    )
    script.chmod(0o755)
    return script


def test_parse_options_overrides_with_dashes_and_underscores(tmp_path: Path) -> None:
    script = _script(tmp_path)
    out = run_cmd([str(script), "--json-nj", "3", "--exp_dir", "exp/b", "pos1"], check=True)
    assert out.stdout.strip() == "json_nj=3 use_gpu=false exp_dir=exp/b rest=pos1"


def test_parse_options_unknown_option_is_named(tmp_path: Path) -> None:
    out = run_cmd([str(_script(tmp_path)), "--no-such-option", "1"])
    assert out.returncode != 0
    assert "no-such-option" in out.stderr


def test_parse_options_boolean_must_be_true_or_false(tmp_path: Path) -> None:
    script = _script(tmp_path)
    bad = run_cmd([str(script), "--use-gpu", "yes"])
    assert bad.returncode != 0 and "true or false" in bad.stderr
    good = run_cmd([str(script), "--use-gpu", "true"], check=True)
    assert "use_gpu=true" in good.stdout


def test_parse_options_config_file_and_later_override(tmp_path: Path) -> None:
    conf = tmp_path / "my.conf"
    conf.write_text("json_nj=5\nexp_dir=exp/from_conf\n")
    out = run_cmd([str(_script(tmp_path)), "--config", str(conf), "--json-nj", "6"], check=True)
    assert "json_nj=6" in out.stdout and "exp_dir=exp/from_conf" in out.stdout
    missing = run_cmd([str(_script(tmp_path)), "--config", str(tmp_path / "nope.conf")])
    assert missing.returncode != 0 and "nope.conf" in missing.stderr


def test_parse_options_help_lists_variables_with_values_and_stages(tmp_path: Path) -> None:
    out = run_cmd([str(_script(tmp_path)), "--json-nj", "2", "--help"], check=True)
    assert "Usage: recipe.sh" in out.stdout
    assert re.search(r"--json-nj\s+'2'", out.stdout)
    assert re.search(r"--use-gpu\s+'false'", out.stdout)
    assert "0: data" in out.stdout and "1: features" in out.stdout


def test_job_runner_runs_jobs_in_parallel(tmp_path: Path) -> None:
    # Job 1 waits (up to 20 s) for job 2's marker: it can only finish if both run at once.
    marker = tmp_path / "marker"
    cmd = (
        f"if [ JOB = 1 ]; then for i in $(seq 200); do [ -e {marker}.2 ] && exit 0; "
        f"sleep 0.1; done; exit 1; else touch {marker}.JOB; fi"
    )
    out = run_cmd(
        ["run.py", "--max-jobs-run", "2", "JOB=1:2", str(tmp_path / "log/w.JOB.log"), cmd],
        check=True,
    )
    assert out.returncode == 0
    for job in (1, 2):
        assert (tmp_path / f"log/w.{job}.log").read_text().startswith("# ")


def test_job_runner_respects_max_jobs_run(tmp_path: Path) -> None:
    # Each job fails if another job is running at the same time.
    lock = tmp_path / "running"
    cmd = (
        f"if ls {lock}.* >/dev/null 2>&1; then exit 3; fi; touch {lock}.JOB; sleep 0.2; "
        f"rm {lock}.JOB"
    )
    run_cmd(
        ["run.py", "--max-jobs-run", "1", "JOB=1:4", str(tmp_path / "l.JOB.log"), cmd], check=True
    )


def test_job_runner_failure_names_job_and_log(tmp_path: Path) -> None:
    out = run_cmd(
        [
            "run.py",
            "JOB=1:3",
            str(tmp_path / "log/x.JOB.log"),
            "bash",
            "-c",
            "echo output of JOB; [ JOB != 2 ]",
        ]
    )
    assert out.returncode != 0
    assert "JOB=2" in out.stderr and str(tmp_path / "log/x.2.log") in out.stderr
    assert "1 of 3 jobs failed" in out.stderr
    assert "output of 2" in (tmp_path / "log/x.2.log").read_text()
    assert "output of 3" in (tmp_path / "log/x.3.log").read_text()


def test_run_sh_help_lists_every_variable_and_stage() -> None:
    out = run_cmd(["./run.sh", "--help"], check=True)
    for name in RECIPE_VARS:
        assert re.search(rf"--{name.replace('_', '-')}\s+'", out.stdout), name
    for number in range(-1, 7):
        assert re.search(rf"^\s+{number}: ", out.stdout, re.M), number


def test_run_sh_unknown_option_fails_naming_it() -> None:
    out = run_cmd(["./run.sh", "--no-such-option", "1"])
    assert out.returncode != 0 and "no-such-option" in out.stderr
    # one line that names the fix (issue 11: a newcomer's typo)
    assert len(out.stderr.strip().splitlines()) == 1 and "see --help" in out.stderr, out.stderr


def test_run_sh_stage_guards_select_nothing_outside_the_range(tmp_path: Path) -> None:
    out = run_cmd(
        [
            "./run.sh",
            "--stage",
            "5",
            "--stop-stage",
            "4",
            "--wav-dir",
            str(tmp_path),
            "--base-model",
            str(tmp_path / "checkpoint.1"),
            "--exp-dir",
            str(tmp_path / "exp"),
        ],
        check=True,
    )
    assert "==== stage" not in out.stdout


def test_run_sh_own_data_needs_a_base_model(tmp_path: Path) -> None:
    out = run_cmd(
        ["./run.sh", "--stage", "0", "--wav-dir", str(tmp_path), "--exp-dir", str(tmp_path / "exp")]
    )
    assert out.returncode != 0 and "--base-model" in out.stderr


def test_recipe_scripts_are_executable() -> None:
    # run.sh and the stages call scripts by name through PATH: a lost +x bit breaks a fresh clone
    scripts = [
        *REPO.glob("steps/*.py"),
        *REPO.glob("utils/*.py"),
        *REPO.glob("utils/*.sh"),
        *REPO.glob("local/**/*.sh"),
        REPO / "run.sh",
        REPO / "tools/setup.sh",
        REPO / "tests/run.sh",
        REPO / ".ci/run",
    ]
    # and every file that starts with a shebang: README and docstrings call them by path
    scripts += [p for p in repo_files() if p.open("rb").read(2) == b"#!"]
    not_executable = [str(p.relative_to(REPO)) for p in scripts if not os.access(p, os.X_OK)]
    assert not not_executable, f"not executable: {not_executable}"


def _recipe_with_demo_defaults(tmp_path: Path, extra: str = "") -> Path:
    """A recipe script with three variables (plus ``extra``, "name=value" words) that applies
    demo defaults (epochs=+8, train_config, mix=0.5) and prints them all."""
    defaults = tmp_path / "demo.conf"
    defaults.write_text("epochs=+8\ntrain_config=conf/demo_finetune.yaml\nmix=0.5\n")
    names = ["epochs", "train_config", "mix", *(w.split("=")[0] for w in extra.split())]
    script = tmp_path / "r.sh"
    script.write_text(
        textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        epochs=40; train_config=conf/finetune.yaml; mix=0; {extra}
        . {REPO}/utils/parse_options.sh
        apply_defaults {defaults}
        echo "{" ".join(f"{n}=${n}" for n in names)}"
        """)
    )
    script.chmod(0o755)
    return script


def test_parse_options_records_what_the_command_line_gave(tmp_path: Path) -> None:
    # demo settings (a defaults file) never replace a value given on the command line, even one
    # equal to the default
    script = _recipe_with_demo_defaults(tmp_path)
    out = run_cmd([str(script), "--epochs", "40", "--mix", "0"], check=True)
    assert out.stdout.strip() == "epochs=40 train_config=conf/demo_finetune.yaml mix=0"
    out = run_cmd([str(script)], check=True)
    assert out.stdout.strip() == "epochs=+8 train_config=conf/demo_finetune.yaml mix=0.5"


def test_parse_options_config_file_values_count_as_given(tmp_path: Path) -> None:
    # a --config FILE is options written down: its values are explicit like --name value
    script = _recipe_with_demo_defaults(tmp_path, "use_gpu=false")
    mine = tmp_path / "mine.conf"
    mine.write_text("# equal to the defaults, and still mine\nepochs=40\n  export mix=0\n")
    out = run_cmd([str(script), "--config", str(mine)], check=True)
    assert out.stdout.strip() == (
        "epochs=40 train_config=conf/demo_finetune.yaml mix=0 use_gpu=false"
    )
    # a later option still wins over the file
    out = run_cmd([str(script), "--config", str(mine), "--epochs", "3"], check=True)
    assert out.stdout.startswith("epochs=3 ")
    # a typo in the file is refused like a typo on the command line, before anything is set
    typo = tmp_path / "typo.conf"
    typo.write_text("epochs=40\nepoch=3\n")
    out = run_cmd([str(script), "--config", str(typo)])
    assert out.returncode != 0 and not out.stdout
    assert out.stderr.strip() == (
        f"{script}: config file '{typo}' line 2: unknown variable 'epoch' (see --help)"
    )
    boolean = tmp_path / "bool.conf"
    boolean.write_text("use_gpu=yes\n")
    out = run_cmd([str(script), "--config", str(boolean)])
    assert out.returncode != 0 and "use_gpu is boolean: give true or false" in out.stderr


def test_run_sh_demo_mode_keeps_explicit_values(tmp_path: Path) -> None:
    # an empty stage range runs nothing; the demo settings line shows what would be used
    common = ["./run.sh", "--stage", "5", "--stop-stage", "4", "--exp-dir", str(tmp_path)]
    out = run_cmd(
        [
            *common,
            "--epochs",
            "40",
            "--train-config",
            "conf/finetune.yaml",
            "--source-mix-ratio",
            "0",
            "--avg-start",
            "37",
            "--avg-end",
            "40",
        ],
        check=True,
    )
    assert (
        "train_config=conf/finetune.yaml epochs=40 source_mix_ratio=0 avg_start=37 avg_end=40"
    ) in out.stdout
    out = run_cmd(common, check=True)
    assert "train_config=conf/demo_finetune.yaml epochs=+8 source_mix_ratio=0.5" in out.stdout
    # the same values from a --config file are just as explicit
    mine = tmp_path / "mine.conf"
    mine.write_text("epochs=40\ntrain_config=conf/finetune.yaml\nsource_mix_ratio=0\n")
    out = run_cmd([*common, "--config", str(mine)], check=True)
    assert "train_config=conf/finetune.yaml epochs=40 source_mix_ratio=0 " in out.stdout


def test_cmd_options_are_parsed_before_cmd_sh_uses_them(tmp_path: Path) -> None:
    # cmd.sh is sourced after the options: --cmd-backend is used, not silently ignored
    out = run_cmd(
        [
            "./run.sh",
            "--stage",
            "5",
            "--stop-stage",
            "4",
            "--cmd-backend",
            "bogus",
            "--exp-dir",
            str(tmp_path),
        ]
    )
    assert out.returncode != 0 and "bogus" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_checkpoint_paths_of_the_wrong_kind_are_named() -> None:
    import pytest as _pytest

    from e2e_asr.model.checkpoint import CheckpointError, load_checkpoint

    with _pytest.raises(CheckpointError, match="is a directory; give a checkpoint file"):
        load_checkpoint(REPO / "conf")
    with _pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(REPO / "conf" / "decode.yaml")


def test_egs_outputs_are_git_ignored_and_stages_have_one_implementation() -> None:
    import subprocess

    for path in (
        "egs/aishell/exp/output/data/train/text",
        "egs/aishell/exp/finetune/model.avg",
        "exp/finetune/model.avg",
    ):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path
    # the stage logic lives in utils/stages.sh; the recipes only set variables and source it
    for recipe in (REPO / "run.sh", REPO / "egs/aishell/run.sh"):
        text = recipe.read_text()
        assert ". utils/stages.sh; exit 0" in text
        for step in (
            "make_feats.py",
            "make_json.py",
            "train.py",
            "average_checkpoints.py",
            "export.py",
            "decode.py",
        ):
            assert step not in text, f"{recipe.name} calls {step} itself"


def test_tests_run_sh_refuses_a_bad_worker_count_before_setting_up() -> None:
    proc = run_cmd("TEST_WORKERS=two tests/run.sh tests/test_config.py")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "tests/run.sh: TEST_WORKERS='two' is not a number of workers (0: one process)"
    )
    assert "setup:" not in proc.stdout + proc.stderr
