#!/usr/bin/env bash
# The whole test suite: formatting, lints, the terraform checks, unit and integration
# tests against a real PostgreSQL. Provisions the private cluster (scripts/db.sh) unless DATABASE_URL is set, in
# which case HEARTH_MIGRATION_DATABASE_URL must name the owner role of that database.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one build directory across clones (CI builds a fresh clone each time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"

if [ -z "${DATABASE_URL:-}" ]; then
    scripts/db.sh start
    eval "$(scripts/db.sh env hearth_test)"
fi
: "${HEARTH_MIGRATION_DATABASE_URL:?set HEARTH_MIGRATION_DATABASE_URL (owner role) along with DATABASE_URL}"
# Real third-party clients the integration tests drive (e.g. the `hl7` MLLP client).
HEARTH_PEER_PYTHON=$(scripts/peers.sh)
export HEARTH_PEER_PYTHON

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== terraform checks (fmt, checkov, invariants)" >&2
scripts/terraform-check.sh
echo "== cargo test" >&2
cargo test --workspace --locked "$@"
