# Environment for the recipe: sourced by run.sh and by the stage scripts' callers.
# The virtualenv is made by tools/setup.sh; utils/ and steps/ go on PATH as in Kaldi.
E2E_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export E2E_ROOT
if [ ! -x "$E2E_ROOT/.venv/bin/python" ]; then
  echo "path.sh: $E2E_ROOT/.venv is missing; run tools/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$E2E_ROOT/.venv/bin/activate"
export PATH="$E2E_ROOT/utils:$E2E_ROOT/steps:$PATH"
export PYTHONUNBUFFERED=1
# Matplotlib never opens a window; plots are written to files.
export MPLBACKEND=Agg
