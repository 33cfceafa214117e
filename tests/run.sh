#!/usr/bin/env bash
# The test command: sets up the environment on first use, then runs pytest.
# Extra arguments go to pytest (e.g. tests/run.sh -k parse_options -x). Exit code is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
# one worker per core (at most 8: each holds torch and its tests' processes in memory), each
# taking whole test files, so module fixtures are built once; TEST_WORKERS=0 runs everything
# in this process (e.g. for pdb)
cores=$(nproc)
workers=${TEST_WORKERS:-$(( cores < 8 ? cores : 8 ))}
[[ $workers =~ ^[0-9]+$ ]] || {
  echo "tests/run.sh: TEST_WORKERS='$workers' is not a number of workers (0: one process)" >&2
  exit 2
}
tools/setup.sh
tools/setup.sh --demo   # espeak-ng: the demo tests synthesise speech
tools/setup.sh --sox    # sox: the audio-conversion tests resample and downmix with it
. ./path.sh
set +e
python -m pytest -q -n "$workers" --dist loadfile "$@"
code=$?
set -e
exit $code
