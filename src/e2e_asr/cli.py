"""How the recipe's scripts report an error the user can fix: one line, no traceback.

Every step (``steps/*.py``, ``utils/*.py``, ``local/**/*.py``) and stage 3's training ranks
report such errors through :func:`report_error`: one line ``PROG: error: MESSAGE`` on stderr
that says what is wrong and what to do. The traceback behind it is printed only when asked:
with ``E2E_ASR_DEBUG=1`` in the environment (``E2E_ASR_DEBUG=1 ./run.sh ...``; it reaches every
stage, job and training rank) the full traceback comes first, then the same line. Errors that
are not the user's (a bug) are never caught, so they always show their traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

DEBUG_ENV = "E2E_ASR_DEBUG"


def debug_enabled() -> bool:
    """True when ``E2E_ASR_DEBUG`` is set to anything but empty, ``0`` or ``false``."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def report_error(
    prog: str, error: BaseException | str, *, label: str | None = "error", context: str = ""
) -> int:
    """Print ``PROG: LABEL: CONTEXTERROR`` (no ``LABEL: `` when ``label`` is None) as one line
    on stderr, with ``E2E_ASR_DEBUG=1`` the traceback of ``error`` first; return exit code 1."""
    if debug_enabled() and isinstance(error, BaseException):
        traceback.print_exception(error, file=sys.stderr)
    head = f"{prog}: {label}: " if label else f"{prog}: "
    print(f"{head}{context}{error}", file=sys.stderr)
    return 1
