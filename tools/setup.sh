#!/usr/bin/env bash
# One-command environment setup; idempotent and fast when everything is present.
#   tools/setup.sh          .venv with Python 3.11 and this package installed editable with its
#                           pinned dependencies (a stamp holding the hash of pyproject.toml
#                           skips pip when nothing changed). No system package is needed for
#                           your own data: sox is asked for by stage 0 only when some audio must
#                           be resampled or downmixed.
#   tools/setup.sh --demo   also espeak-ng, which only the embedded demo uses (to synthesise its
#                           corpus): installed with apt-get when running as root, otherwise one
#                           line says what to install.
#   tools/setup.sh --sox    sox the same way (the tests convert audio with it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# A system tool, installed only when asked for: `--demo` (espeak-ng) or `--sox` (sox).
if [ "${1:-}" = --demo ] || [ "${1:-}" = --sox ]; then
  if [ "$1" = --demo ]; then
    tool=espeak-ng; why="the demo needs espeak-ng to synthesise its corpus"
  else
    tool=sox; why="sox converts audio (other sample rates, several channels)"
  fi
  command -v "$tool" >/dev/null 2>&1 && exit 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $tool with apt-get ($why)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    exit 0
  fi
  echo "setup: $why: sudo apt-get install -y $tool (your own data needs no other system package)" >&2
  exit 1
elif [ $# -gt 0 ]; then
  echo "setup: unknown argument '$1' (usage: tools/setup.sh [--demo|--sox])" >&2
  exit 1
fi

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin="$candidate"; break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi

stamp=.venv/.setup-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the package and its pinned dependencies into .venv (first run takes a few minutes)"
  log=.venv/setup-pip.log
  # torch is pinned (torch==2.13.0) in pyproject.toml: an unpinned torch would pull a multi-GB
  # CUDA build. On a GPU machine, install the torch 2.13.0 build for your CUDA first; pip keeps it.
  if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
         .venv/bin/python -m pip install --disable-pip-version-check -e ".[dev]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: pip install failed; full log in $root/$log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
