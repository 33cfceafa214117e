#!/usr/bin/env bash
# The test command: sets up the environment on first use, then runs pytest.
# Extra arguments go to pytest (e.g. tests/run.sh -k parse_options -x). Exit code is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/setup.sh --demo   # espeak-ng: the demo tests synthesise speech
tools/setup.sh --sox    # sox: the audio-conversion tests resample and downmix with it
. ./path.sh
set +e
# one worker per core, each taking whole test files (module fixtures are built once);
# TEST_WORKERS=0 runs everything in this process (e.g. for pdb)
python -m pytest -q -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
code=$?
set -e
exit $code
