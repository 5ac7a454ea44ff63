# shellcheck shell=bash
# A private, throw-away MariaDB server for tests: its own data directory in a temp dir, listening
# only on 127.0.0.1 on a free port, unix socket inside the temp dir, root without a password.
#
#   mariadb_start          starts it and exports MLKUBE_TEST_MYSQL_URL (and MARIADB_PORT, MARIADB_DIR)
#   mariadb_createdb NAME  creates a fresh database and prints its URL (mysql://root@127.0.0.1:PORT/NAME)
#   mariadb_stop           stops the server and removes the temp dir (safe to call twice)
#
# Needs scripts/lib/common.sh. Installs Debian's `mariadb-server` package when no server binary
# exists (the package starts nothing by itself in a container). As root, the server runs as the
# `mysql` system user the package creates.

MARIADB_DIR=""
MARIADB_PORT=""
MARIADB_PID=""

mariadb_start() {
    if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
        log "MariaDB server not found; installing Debian's mariadb-server package"
        apt_install mariadb-server
    fi
    local bin=/usr/sbin/mariadbd
    command -v mariadbd >/dev/null 2>&1 && bin="$(command -v mariadbd)"

    MARIADB_DIR="$(mktemp -d /tmp/mlkube-mariadb.XXXXXX)"
    mkdir -p "${MARIADB_DIR}/data"
    local user_args=()
    if [[ $(id -u) -eq 0 ]]; then
        id -u mysql >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /bin/false mysql
        chown -R mysql: "$MARIADB_DIR"
        user_args=(--user=mysql)
    fi
    chmod 700 "$MARIADB_DIR"
    MARIADB_PORT="$(free_port)"

    log "mariadb-install-db in ${MARIADB_DIR} ($("$bin" --version))"
    mariadb-install-db "${user_args[@]}" --datadir="${MARIADB_DIR}/data" \
        --auth-root-authentication-method=normal --skip-test-db >"${MARIADB_DIR}/install.log" 2>&1 ||
        { cat "${MARIADB_DIR}/install.log" >&2; die "mariadb-install-db failed"; }

    # Tests trade durability for speed (as the PostgreSQL cluster does): no fsync per commit,
    # except where durability is what is measured (MLKUBE_MARIADB_DURABLE=1: the benchmarks).
    local flush=2
    [[ "${MLKUBE_MARIADB_DURABLE:-0}" == 1 ]] && flush=1
    setsid "$bin" --no-defaults "${user_args[@]}" --datadir="${MARIADB_DIR}/data" \
        --socket="${MARIADB_DIR}/mariadb.sock" --pid-file="${MARIADB_DIR}/mariadb.pid" \
        --port="$MARIADB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --max-connections=300 --innodb-flush-log-at-trx-commit="$flush" --innodb-buffer-pool-size=128M \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_bin \
        --log-error="${MARIADB_DIR}/mariadb.log" >/dev/null 2>&1 &
    MARIADB_PID=$!
    local i
    for ((i = 0; i < 120; i++)); do
        if mariadb -h 127.0.0.1 -P "$MARIADB_PORT" -u root -e 'SELECT 1' >/dev/null 2>&1; then
            break
        fi
        kill -0 "$MARIADB_PID" 2>/dev/null || { cat "${MARIADB_DIR}/mariadb.log" >&2; die "MariaDB exited at start"; }
        sleep 0.5
    done
    ((i < 120)) || { cat "${MARIADB_DIR}/mariadb.log" >&2; die "MariaDB did not start"; }
    export MARIADB_DIR MARIADB_PORT
    export MLKUBE_TEST_MYSQL_URL="mysql://root@127.0.0.1:${MARIADB_PORT}/mysql"
    log "MariaDB listening on 127.0.0.1:${MARIADB_PORT} (MLKUBE_TEST_MYSQL_URL=${MLKUBE_TEST_MYSQL_URL})"
}

# mariadb_createdb NAME -> prints mysql://root@127.0.0.1:PORT/NAME
mariadb_createdb() {
    local name=$1
    [[ -n "$MARIADB_PORT" ]] || die "mariadb_createdb: server not started"
    mariadb -h 127.0.0.1 -P "$MARIADB_PORT" -u root \
        -e "DROP DATABASE IF EXISTS \`${name}\`; CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" >&2 || return 1
    printf 'mysql://root@127.0.0.1:%s/%s\n' "$MARIADB_PORT" "$name"
}

mariadb_stop() {
    [[ -n "$MARIADB_DIR" ]] || return 0
    if [[ -n "$MARIADB_PID" ]] && kill -0 "$MARIADB_PID" 2>/dev/null; then
        kill -9 "$MARIADB_PID" 2>/dev/null || true
        wait "$MARIADB_PID" 2>/dev/null || true
    fi
    rm -rf "$MARIADB_DIR"
    MARIADB_DIR=""
    MARIADB_PID=""
    unset MLKUBE_TEST_MYSQL_URL
}
