#!/usr/bin/env bash
# Run Hearth with a demo tenant and synthetic patients, and print what to try.
# Provisions the private PostgreSQL cluster (scripts/db.sh) unless DATABASE_URL is set.
# Stop with Ctrl-C; `scripts/db.sh stop` stops the database.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth/target}"
export HEARTH_LISTEN="${HEARTH_LISTEN:-127.0.0.1:8080}"
export HEARTH_PUBLIC_BASE_URL="${HEARTH_PUBLIC_BASE_URL:-http://$HEARTH_LISTEN}"

if [ -z "${DATABASE_URL:-}" ]; then
    scripts/db.sh start
    eval "$(scripts/db.sh env hearth)"
fi

cargo build --locked --bin hearth
hearth="$CARGO_TARGET_DIR/debug/hearth"

# An MLLP listener for the demo tenant, accepting any sender.
mkdir -p .hearth
export HEARTH_MLLP_PORT="${HEARTH_MLLP_PORT:-2575}"
cat > .hearth/demo.toml <<TOML
[[mllp.listeners]]
name = "demo-mllp"
listen = "127.0.0.1:$HEARTH_MLLP_PORT"
tenant = "demo"
[[mllp.listeners.feeds]]
name = "any-sender"
time_zone = "America/New_York"
TOML
export HEARTH_CONFIG=.hearth/demo.toml
# Demo mode: the demo tenant also plays an EHR (authorize endpoint with a patient and
# practitioner picker) that launches the SMART app into the tenant demo-app. The EHR is
# this server on plain http, which only the demo allows.
export HEARTH_MODE=demo HEARTH_APP_DEMO_EHR=true HEARTH_APP_ALLOW_HTTP_EHR=true

"$hearth" migrate
"$hearth" tenant create demo --name "Demo Health System" --if-missing
"$hearth" load --tenant demo scripts/demo-data/*.json
# A few hundred more resources through the generator (same write path as everything else).
"$hearth" demo-data --tenant demo --patients 10
"$hearth" tenant create demo-app --name "Demo Health System (SMART app)" --if-missing
"$hearth" ehr register --tenant demo-app --id demo-ehr --name "Demo EHR" \
    --iss "$HEARTH_PUBLIC_BASE_URL/fhir/demo" --client-id hearth-demo-app --client-auth public \
    --scopes "launch openid fhirUser patient/*.rs" \
    --standalone-scopes "launch/patient openid fhirUser patient/*.rs" > /dev/null
token=$("$hearth" token --tenant demo --scope "system/*.cruds" --ttl 86400)
base="$HEARTH_PUBLIC_BASE_URL/fhir/demo"

cat <<MSG

Hearth is starting at $HEARTH_PUBLIC_BASE_URL with tenant "demo".

  Try the SMART app: open $HEARTH_PUBLIC_BASE_URL/demo-ehr in a browser, pick a patient
  and a practitioner, and launch Hearth from the demo EHR's chart.

  FHIR base       $base
  metadata        curl -s $base/metadata
  SMART config    curl -s $base/.well-known/smart-configuration
  partners        hearth client register --tenant demo --client-id ID --jwks-file jwks.json --scopes "system/*.rs"
  a demo patient  curl -s -H "Authorization: Bearer \$TOKEN" $base/Patient/demo-patient-1
  its history     curl -s -H "Authorization: Bearer \$TOKEN" $base/Patient/demo-patient-1/_history
  labs            curl -s -H "Authorization: Bearer \$TOKEN" "$base/Observation?patient=demo-patient-1&category=laboratory"
  health          curl -s $HEARTH_PUBLIC_BASE_URL/readyz
  metrics         curl -s $HEARTH_PUBLIC_BASE_URL/metrics

A token valid for 24 hours (scope system/*.cruds):

  export TOKEN=$token

Mint another:  $hearth token --tenant demo --scope "system/Patient.rs"

HL7 v2 over MLLP on 127.0.0.1:$HEARTH_MLLP_PORT (tenant demo), e.g. with the hl7 package's client:
  \$(scripts/peers.sh) tests/peers/mllp_send.py --host 127.0.0.1 --port $HEARTH_MLLP_PORT tests/fixtures/hl7v2/adt_a01.hl7
  $hearth mllp failed --tenant demo

MSG
exec "$hearth" serve
