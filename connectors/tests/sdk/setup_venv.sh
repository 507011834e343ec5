#!/usr/bin/env bash
# Makes a virtualenv with the official SDKs the connector tests drive, and prints the python path
# to export as HUITONG_TEST_PYTHON.  Usage: connectors/tests/sdk/setup_venv.sh [VENV_DIR]
set -euo pipefail
venv="${1:-/var/tmp/huitong-venv}"
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
echo "$venv/bin/python"
