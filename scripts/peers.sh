#!/usr/bin/env bash
# Third-party test peers: the PyPI `hl7` package (its MLLP client drives tests/peers/
# mllp_send.py) and `moto` (an S3 server for the export tests), installed into the
# project-local venv; the npm packages of
# tests/peers/smart (oidc-provider, jose, playwright-core) installed from its
# package-lock.json; and Debian's chromium for the browser tests (playwright-core never
# downloads a browser).
# Idempotent and quick on a second run. Prints the python to use (its only stdout line).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.hearth/venv
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" >&2
if ! "$VENV/bin/python" -c 'import hl7.mllp, moto.server' 2>/dev/null; then
    echo "peers.sh: installing test peers (tests/peers/requirements.txt)" >&2
    "$VENV/bin/pip" install -q -r "$ROOT/tests/peers/requirements.txt" >&2
fi

SMART=$ROOT/tests/peers/smart
STAMP=$SMART/node_modules/.hearth-package-lock.json
if [[ ! -f $SMART/node_modules/.package-lock.json ]] || ! cmp -s "$SMART/package-lock.json" "$STAMP"; then
    for tool in node npm; do
        command -v "$tool" >/dev/null || { echo "peers.sh: $tool not found (needed for tests/peers/smart)" >&2; exit 1; }
    done
    echo "peers.sh: installing test peers (tests/peers/smart/package-lock.json)" >&2
    npm ci --no-audit --no-fund --prefix "$SMART" >&2
    cp "$SMART/package-lock.json" "$STAMP"
fi
if [[ ! -x /usr/bin/chromium ]]; then
    echo "peers.sh: installing Debian's chromium (headless browser tests)" >&2
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q chromium >&2 || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q chromium >&2; }
fi
echo "$VENV/bin/python"
