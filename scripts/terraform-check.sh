#!/usr/bin/env bash
# Static checks of terraform/: `terraform fmt -check` (when terraform is installed),
# checkov with zero failed checks, and the invariant tests in tests/terraform/.
#
# Needs Python 3.11+ with pip; terraform is optional. Offline apart from PyPI on the first
# run: the pinned tools (terraform/requirements-check.txt) go into a venv outside the repo,
# ${HEARTH_TOOLS_VENV:-$HOME/.cache/hearth/venv-terraform}, reinstalled only when that file
# changes (a copy of it is kept in the venv as the stamp). No provider is downloaded:
# terraform init/validate are not run.
#
# Every step runs; the exit status is non-zero if any of them failed.
set -euo pipefail

cd "$(dirname "$0")/.."

REQUIREMENTS=terraform/requirements-check.txt
VENV=${HEARTH_TOOLS_VENV:-$HOME/.cache/hearth/venv-terraform}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/requirements-check.txt.stamp"

step() { printf '\n== %s\n' "$*" >&2; }
failed=()

# --- tools ---------------------------------------------------------------------------------
step "tools: venv at $VENV"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "terraform-check: needs Python 3.11 or newer as $PYTHON" >&2
    exit 2
fi

if [[ -x "$VENV/bin/checkov" && -d "$VENV/hcl2" ]] && cmp -s "$REQUIREMENTS" "$STAMP"; then
    echo "up to date ($REQUIREMENTS unchanged)" >&2
else
    echo "installing the pinned tools (first run, or $REQUIREMENTS changed)" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    # A Python without ensurepip (Debian without python3-venv) still gets a venv: the
    # outer pip installs into it with --python.
    if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        pip=("$VENV/bin/python" -m pip)
    else
        rm -rf "$VENV"
        "$PYTHON" -m venv --without-pip "$VENV"
        pip=("$PYTHON" -m pip --python "$VENV/bin/python")
    fi
    sections="$VENV/requirements"
    mkdir -p "$sections"
    awk -v dir="$sections" '
        /^# \[checkov\]/ { out = dir "/checkov.txt"; next }
        /^# \[hcl2\]/    { out = dir "/hcl2.txt"; next }
        /^[[:space:]]*(#|$)/ { next }
        out != "" { print > out }
    ' "$REQUIREMENTS"
    "${pip[@]}" install --quiet --disable-pip-version-check --no-input \
        -r "$sections/checkov.txt"
    "${pip[@]}" install --quiet --disable-pip-version-check --no-input \
        --no-deps --target "$VENV/hcl2" -r "$sections/hcl2.txt"
    cp "$REQUIREMENTS" "$STAMP"
fi

# --- terraform fmt -------------------------------------------------------------------------
step "terraform fmt -check -recursive terraform/"
if command -v terraform >/dev/null 2>&1; then
    if ! terraform fmt -check -recursive -diff terraform/; then
        echo "terraform fmt: files above need \`terraform fmt -recursive terraform/\`" >&2
        failed+=("terraform fmt")
    fi
else
    echo "terraform is not installed: fmt check skipped (checkov and the tests still parse every file)" >&2
fi

# --- checkov -------------------------------------------------------------------------------
step "checkov (terraform framework, offline)"
# --skip-download and BC_SKIP_MAPPING: no policy or guideline download; no update check;
# a file checkov cannot parse is an error, not a silent pass.
if ! BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE CKV_PARSE_ERROR_FAIL=TRUE \
    "$VENV/bin/checkov" --directory terraform --framework terraform --quiet --compact \
    --skip-download --skip-path '\.terraform' --output cli; then
    failed+=("checkov terraform/")
fi
step "checkov (Dockerfile)"
if ! BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE CKV_PARSE_ERROR_FAIL=TRUE \
    "$VENV/bin/checkov" --file Dockerfile --framework dockerfile --quiet --compact \
    --skip-download --output cli; then
    failed+=("checkov Dockerfile")
fi

# --- invariants ----------------------------------------------------------------------------
step "invariant tests (tests/terraform/test_invariants.py, python-hcl2)"
if ! PYTHONPATH="$VENV/hcl2" PYTHONDONTWRITEBYTECODE=1 \
    "$VENV/bin/python" tests/terraform/test_invariants.py; then
    failed+=("invariant tests")
fi

# --- result --------------------------------------------------------------------------------
if ((${#failed[@]})); then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "all terraform checks passed"
