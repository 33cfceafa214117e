"""Shared pytest fixtures: repository paths and a runner for the recipe's shell scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tests/run.sh runs one pytest-xdist worker per core: the processes a test starts (recipe
# stages, training, decode jobs) take one thread each, like the tests' own torch
# (model_fixtures.one_thread), rather than each spinning on every core against the other workers
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Recipe scripts start with `import _venv` (utils/_venv.py: the project's .venv in a fresh
# shell). Tests that load a script in-process (runpy) find it here; inside the venv it is a no-op.
sys.path.append(str(REPO / "utils"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def recipe_env() -> dict[str, str]:
    """Environment in which utils/ and steps/ are on PATH and the venv's python is first."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [str(REPO / "utils"), str(REPO / "steps"), venv_bin, env.get("PATH", "")]
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def run_cmd(
    args: list[str] | str, cwd: Path | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess:
    """Run a command with the recipe environment, capturing text output."""
    proc = subprocess.run(
        args,
        cwd=cwd or REPO,
        env=recipe_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        shell=isinstance(args, str),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def repo_files(*patterns: str) -> list[Path]:
    """The clone's files (tracked, or new and not ignored) matching git pathspec ``patterns``
    (all files without any), symlinks excluded. The checks that scan the clone use this, not a
    walk of the tree: a walk would also meet what other tests write and delete meanwhile
    (tests/run.sh runs test files in parallel)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *patterns],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = (REPO / name for name in sorted(set(out.split("\0"))) if name)
    return [p for p in paths if p.is_file() and not p.is_symlink()]


# The longest test files (tests/run.sh --durations=30) are collected first, so that they start
# first: tests/run.sh hands whole files to its workers (pytest-xdist --dist loadfile) in
# collection order, and a long file started last would leave the other workers idle.
LONGEST_FIRST = (
    "test_newcomer_path.py",
    "test_pipeline_toy.py",
    "test_slurm.py",
    "test_gpu_check.py",
    "test_train_ddp.py",
    "test_reliability_train.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def readme_block(name: str, command: str) -> str:
    """The text of README's generated block ``<!-- {name}: {command} -->`` .. ``<!-- /{name} -->``
    (each marker exactly once: a block rendered from a file must have one place)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    head, end = f"<!-- {name}: {command} -->\n", f"<!-- /{name} -->"
    assert text.count(head) == 1 and text.count(end) == 1, f"README: {head.strip()} / {end}"
    return text.split(head, 1)[1].split(end, 1)[0]
