#!/usr/bin/env python3
"""Run a recipe script with the project's own environment, whatever started it.

``import _venv`` at the top of a script in steps/, utils/, local/ or benchmarks/ (before any
third-party import) makes ``steps/transcribe.py ...`` work in a fresh shell: when the
``e2e_asr`` package is not importable (no ``. ./path.sh``, a system python3), the script is
started again with ``<repo>/.venv/bin/python``; when that does not exist either, one line says
to run tools/setup.sh. Inside the venv it does nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

if importlib.util.find_spec("e2e_asr") is None:
    _root = Path(__file__).resolve().parents[1]
    _python = _root / ".venv" / "bin" / "python"
    if not _python.is_file() or os.environ.get("E2E_ASR_VENV_REEXEC") == str(_python):
        sys.exit(
            f"{Path(sys.argv[0]).name}: the project's environment {_root}/.venv is missing or "
            f"broken; run {_root}/tools/setup.sh first"
        )
    os.environ["E2E_ASR_VENV_REEXEC"] = str(_python)
    os.execv(str(_python), [str(_python), *sys.argv])
