"""Shared pytest fixtures: repository paths and a runner for the recipe's shell scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
    env["PATH"] = os.pathsep.join([str(REPO / "utils"), str(REPO / "steps"), venv_bin,
                                   env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def run_cmd(args: list[str] | str, cwd: Path | None = None, timeout: float = 600,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run a command with the recipe environment, capturing text output."""
    proc = subprocess.run(args, cwd=cwd or REPO, env=recipe_env(), capture_output=True,
                          text=True, timeout=timeout, shell=isinstance(args, str))
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def readme_block(name: str, command: str) -> str:
    """The text of README's generated block ``<!-- {name}: {command} -->`` .. ``<!-- /{name} -->``
    (each marker exactly once: a block rendered from a file must have one place)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    head, end = f"<!-- {name}: {command} -->\n", f"<!-- /{name} -->"
    assert text.count(head) == 1 and text.count(end) == 1, f"README: {head.strip()} / {end}"
    return text.split(head, 1)[1].split(end, 1)[0]

