# shellcheck shell=bash
# A private, throw-away PostgreSQL cluster for tests: its own data directory in a temp dir, listening
# only on 127.0.0.1 on a free port, unix socket inside the temp dir, trust auth, fsync off.
#
#   pg_start            starts it and exports MLKUBE_TEST_POSTGRES_URL (and PG_PORT, PG_BIN, PG_DIR)
#   pg_createdb NAME    creates a fresh database and prints its URL
#   pg_stop             stops the cluster and removes the temp dir (safe to call twice)
#
# Needs scripts/lib/common.sh. Installs Debian's `postgresql` package when no server binaries exist.
# As root, the server refuses to run, so initdb/pg_ctl run as the `postgres` system user.

PG_DIR=""
PG_PORT=""
PG_BIN=""

_pg_find_bin() {
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "${dir}/initdb" && -x "${dir}/pg_ctl" && -x "${dir}/postgres" ]] || continue
        # Highest major version wins (the glob sorts 9 after 15, so compare numerically).
        if [[ -z "$best" ]] || (($(basename "$(dirname "$dir")" | cut -d. -f1) > $(basename "$(dirname "$best")" | cut -d. -f1))); then
            best=$dir
        fi
    done
    printf '%s' "$best"
}

# Run a PostgreSQL server binary as a user it accepts.
_pg_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    PG_BIN="$(_pg_find_bin)"
    if [[ -z "$PG_BIN" ]]; then
        log "PostgreSQL server not found; installing Debian's postgresql package"
        apt_install postgresql
        # Debian's postinst creates and may start a default cluster (port 5432); we never use it.
        if command -v pg_lsclusters >/dev/null 2>&1; then
            local version name
            while read -r version name _; do
                pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
            done < <(pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online"')
        fi
        PG_BIN="$(_pg_find_bin)"
        [[ -n "$PG_BIN" ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
    fi
    if [[ $(id -u) -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
    fi

    # /tmp rather than $TMPDIR: the postgres user must be able to reach the directory.
    PG_DIR="$(mktemp -d /tmp/mlkube-pg.XXXXXX)"
    mkdir -p "${PG_DIR}/sock"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$PG_DIR"
    fi
    chmod 700 "$PG_DIR"
    PG_PORT="$(free_port)"

    log "initdb in ${PG_DIR} ($("${PG_BIN}/postgres" --version))"
    _pg_as_owner "${PG_BIN}/initdb" --pgdata="${PG_DIR}/data" --username=postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >"${PG_DIR}/initdb.log" 2>&1 ||
        { cat "${PG_DIR}/initdb.log" >&2; die "initdb failed"; }

    local opts="-c listen_addresses=127.0.0.1 -p ${PG_PORT} -c unix_socket_directories=${PG_DIR}/sock"
    opts+=" -c max_connections=200"
    # Tests trade PostgreSQL's own durability for speed, except where it is what they test
    # (MLKUBE_PG_DURABLE=1: the reliability step crashes PostgreSQL under acknowledged writes).
    if [[ "${MLKUBE_PG_DURABLE:-0}" != 1 ]]; then
        opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    if ! _pg_as_owner "${PG_BIN}/pg_ctl" start --pgdata="${PG_DIR}/data" --wait --timeout=60 \
        --log="${PG_DIR}/postgres.log" --options="$opts" >/dev/null; then
        cat "${PG_DIR}/postgres.log" >&2 || true
        die "PostgreSQL did not start"
    fi
    export PG_DIR PG_PORT PG_BIN
    export MLKUBE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:${PG_PORT}/postgres"
    log "PostgreSQL listening on 127.0.0.1:${PG_PORT} (MLKUBE_TEST_POSTGRES_URL=${MLKUBE_TEST_POSTGRES_URL})"
}

# pg_createdb NAME -> prints postgresql://postgres@127.0.0.1:PORT/NAME
pg_createdb() {
    local name=$1
    [[ -n "$PG_PORT" ]] || die "pg_createdb: cluster not started"
    "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS \"${name}\"" -c "CREATE DATABASE \"${name}\"" >&2 || return 1
    printf 'postgresql://postgres@127.0.0.1:%s/%s\n' "$PG_PORT" "$name"
}

pg_stop() {
    [[ -n "$PG_DIR" ]] || return 0
    if [[ -f "${PG_DIR}/data/postmaster.pid" ]]; then
        _pg_as_owner "${PG_BIN}/pg_ctl" stop --pgdata="${PG_DIR}/data" --mode=immediate --wait \
            --timeout=30 >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=""
    unset MLKUBE_TEST_POSTGRES_URL
}
