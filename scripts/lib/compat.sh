# shellcheck shell=bash
# One run of the MLflow-client compatibility suite (tests/compat) against a fresh server.
#
#   run_compat_suite CLIENT_VERSION SERVER_KIND BACKEND [PYTEST_ARGS...]
#       CLIENT_VERSION: MLflow client to install/reuse (e.g. 3.17.2)
#       SERVER_KIND:    mlkube | upstream (upstream = `mlflow server` of the same version, which proves
#                       the tests themselves; tests marked mlkube_only are skipped then)
#       BACKEND:        sqlite | postgres | mariadb (postgres needs pg_start first, mariadb
#                       mariadb_start)
#   Returns pytest's exit status; appends one line to COMPAT_RESULTS and adds to COMPAT_PASSED /
#   COMPAT_FAILED. A failed run keeps its temp dir (server log, database, pytest log) for inspection.
#
# Needs common.sh, venv.sh, server.sh and (for postgres) postgres.sh, (for mariadb) mariadb.sh.

COMPAT_RESULTS=()
COMPAT_PASSED=0
COMPAT_FAILED=0
_COMPAT_PYTEST_PID=""
_COMPAT_TAIL_PID=""
_COMPAT_WORKDIR=""

# Registered once: stops a pytest still running (the script was interrupted) and removes the temp dir
# of an unfinished run.
_compat_cleanup() {
    if [[ -n "$_COMPAT_PYTEST_PID" ]]; then
        kill -TERM -- "-${_COMPAT_PYTEST_PID}" 2>/dev/null || true
        _COMPAT_PYTEST_PID=""
    fi
    if [[ -n "$_COMPAT_TAIL_PID" ]]; then
        kill -TERM "$_COMPAT_TAIL_PID" 2>/dev/null || true
        _COMPAT_TAIL_PID=""
    fi
    if [[ -n "$_COMPAT_WORKDIR" ]]; then
        rm -rf "$_COMPAT_WORKDIR"
        _COMPAT_WORKDIR=""
    fi
}
_compat_cleanup_registered=0

run_compat_suite() {
    local version=$1 kind=$2 backend=$3
    shift 3
    local label="mlflow-${version} client -> ${kind} on ${backend}"
    [[ "${MLKUBE_COMPAT_AUTH:-0}" == 1 ]] && label+=" with basic auth (test_auth.py + smoke)"
    [[ "${MLKUBE_COMPAT_ARTIFACTS:-local}" == s3 ]] && label+=", artifacts on S3"
    banner "compat: ${label}"
    if ((_compat_cleanup_registered == 0)); then
        push_cleanup _compat_cleanup
        _compat_cleanup_registered=1
    fi
    local venv
    venv="$(ensure_mlflow_venv "$version")" || die "could not set up the MLflow ${version} virtualenv"

    local workdir
    workdir="$(mktemp -d "${TMPDIR:-/tmp}/mlkube-compat.XXXXXX")"
    _COMPAT_WORKDIR=$workdir
    local backend_uri
    case "$backend" in
        sqlite) backend_uri="sqlite:///${workdir}/mlkube.db" ;;
        postgres)
            local db
            db="compat_$(printf '%s' "$version" | tr -c '[:alnum:]' '_')_${kind}_$$_${RANDOM}"
            backend_uri="$(pg_createdb "$db")" || die "could not create database ${db}"
            ;;
        mariadb)
            local db
            db="compat_$(printf '%s' "$version" | tr -c '[:alnum:]' '_')_${kind}_$$_${RANDOM}"
            backend_uri="$(mariadb_createdb "$db")" || die "could not create database ${db}"
            ;;
        *) die "unknown backend ${backend}" ;;
    esac

    local started=$SECONDS rc=0 summary="server did not start"
    if start_tracking_server "$kind" "$backend_uri" "$workdir" "$venv"; then
        local upstream=0
        [[ "$kind" == upstream ]] && upstream=1
        # pytest runs in its own process group in the background, so that an interrupted script
        # stops it at once (a foreground child would delay the signal traps until it finished).
        local pytest_log="${workdir}/pytest.log"
        : >"$pytest_log"
        (
            cd "$MLKUBE_ROOT" &&
                MLKUBE_TRACKING_URI="$SERVER_URL" \
                    MLKUBE_COMPAT_ARTIFACT_ROOT="$SERVER_ARTIFACT_ROOT" \
                    MLKUBE_COMPAT_UPSTREAM="$upstream" \
                    MLKUBE_COMPAT_ARTIFACTS="${MLKUBE_COMPAT_ARTIFACTS:-local}" \
                    MLFLOW_TRACKING_URI="$SERVER_URL" \
                    exec setsid "${venv}/bin/python" -m pytest tests/compat -p no:cacheprovider -q -rfEs \
                    --tb=short "$@"
        ) >"$pytest_log" 2>&1 </dev/null &
        _COMPAT_PYTEST_PID=$!
        tail -n +1 -f --pid="$_COMPAT_PYTEST_PID" "$pytest_log" &
        _COMPAT_TAIL_PID=$!
        wait "$_COMPAT_PYTEST_PID" || rc=$?
        _COMPAT_PYTEST_PID=""
        wait "$_COMPAT_TAIL_PID" 2>/dev/null || true
        _COMPAT_TAIL_PID=""

        summary="$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran' "$pytest_log" |
            tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
        summary=${summary:-"no pytest summary (exit ${rc})"}
        local failed_before=$COMPAT_FAILED
        _compat_count "$summary"
        # A run that failed without a failed test (collection error, crash) still counts once.
        if ((rc != 0 && COMPAT_FAILED == failed_before)); then
            COMPAT_FAILED=$((COMPAT_FAILED + 1))
        fi
        if ((rc != 0)); then
            log "server log tail (${SERVER_LOG}):"
            tail -n 30 "$SERVER_LOG" >&2 || true
        fi
        stop_tracking_server
    else
        rc=1
        COMPAT_FAILED=$((COMPAT_FAILED + 1))
    fi
    local took=$((SECONDS - started))
    if ((rc == 0)); then
        COMPAT_RESULTS+=("PASS  ${label}: ${summary} (${took}s in all)")
        rm -rf "$workdir"
    else
        COMPAT_RESULTS+=("FAIL  ${label}: ${summary} (${took}s in all; server files kept in ${workdir})")
    fi
    _COMPAT_WORKDIR=""
    return "$rc"
}

# Totals from pytest's summary line ("3 failed, 110 passed, 2 skipped in 6s").
_compat_count() {
    local line=$1 n
    n="$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)"
    COMPAT_PASSED=$((COMPAT_PASSED + ${n:-0}))
    n="$(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | grep -oE '[0-9]+' | paste -sd+ - || true)"
    COMPAT_FAILED=$((COMPAT_FAILED + ${n:-0}))
}
