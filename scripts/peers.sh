#!/usr/bin/env bash
# Third-party test peers: the PyPI `hl7` package (its MLLP client drives tests/peers/
# mllp_send.py), installed into the project-local venv. Idempotent and quick on a second run.
# Prints the python to use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.hearth/venv
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" >&2
if ! "$VENV/bin/python" -c 'import hl7.mllp' 2>/dev/null; then
    echo "peers.sh: installing test peers (tests/peers/requirements.txt)" >&2
    "$VENV/bin/pip" install -q -r "$ROOT/tests/peers/requirements.txt" >&2
fi
echo "$VENV/bin/python"
