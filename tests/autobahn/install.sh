#!/usr/bin/env bash
# Installs Autobahn|Testsuite (wstest) into a Python 2.7 virtualenv and prints the path of wstest.
# usage: tests/autobahn/install.sh [DIR]    (default DIR: ./.autobahn; reused when already there)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-.autobahn}
if [ ! -x "$dir/venv/bin/wstest" ]; then
  py27=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 2>/dev/null | head -1 || true)
  [ -n "$py27" ] || py27=$(command -v python2.7 || true)
  [ -n "$py27" ] || { echo "autobahn/install.sh: no CPython 2.7 found (pyenv versions or python2.7 on PATH)" >&2; exit 1; }
  mkdir -p "$dir"
  "$py27" -m pip install -q --disable-pip-version-check --target "$dir/virtualenv" 'virtualenv<20.22' >&2
  PYTHONPATH="$dir/virtualenv" "$py27" -m virtualenv -q "$dir/venv" >&2
  "$dir/venv/bin/pip" install -q -r "$here/requirements.txt" >&2
fi
echo "$(cd "$dir" && pwd)/venv/bin/wstest"
