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
python -m pytest -q "$@"
code=$?
set -e
exit $code
