"""The clone carries what it needs: no code or test names a path outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import repo_files

REPO = Path(__file__).resolve().parents[1]
# absolute paths of the machine the project was developed on, or a sibling of the clone
OUTSIDE = re.compile(r"/work/|\.\./shared|/shared/seeds")


def test_no_code_or_test_reads_outside_the_clone() -> None:
    found = []
    tops = ("src", "steps", "utils", "local", "tests", "egs", "conf", "benchmarks")
    for path in repo_files(*tops):
        if path.suffix not in (".py", ".sh", ".yaml", ".conf") or path == Path(__file__):
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not found, "\n".join(found)
    # the seed system's training yaml the tests load is the repo's own copy
    assert (REPO / "tests" / "data" / "seed_finetune.yaml").is_file()
