# shellcheck shell=bash
# Start and stop a tracking server on a free 127.0.0.1 port for the compatibility suite.
#
#   start_tracking_server KIND BACKEND_URI WORKDIR [VENV]
#       KIND: `mlkube` (the binary in $MLKUBE_SERVER_BIN) or `upstream` (`mlflow server` from VENV,
#       used to prove the suite itself against MLflow). BACKEND_URI: sqlite:///… or postgresql://….
#       Artifacts go to WORKDIR/artifacts, the log to WORKDIR/server.log. Sets SERVER_URL, SERVER_PID,
#       SERVER_ARTIFACT_ROOT, SERVER_LOG and registers a cleanup that stops the server.
#   stop_tracking_server   stops it (whole process group: upstream forks workers).
#
# For KIND mlkube, a set MLKUBE_UI_DIR is passed on as `--ui-dir` (the MLflow web UI build to serve).
# With MLKUBE_COMPAT_ARTIFACTS=s3 the artifact destination is a fresh bucket on the test S3 server
# (scripts/lib/s3.sh, MLKUBE_TEST_S3_ENDPOINT) and SERVER_ARTIFACT_ROOT is empty.
#
# With MLKUBE_COMPAT_AUTH=1 the server runs with basic auth (`--app-name basic-auth`, MLflow's INI file
# written to WORKDIR/basic_auth.ini, default_permission READ, a random admin password) and the admin's
# credentials are exported as MLKUBE_COMPAT_ADMIN_USERNAME / MLKUBE_COMPAT_ADMIN_PASSWORD.
#
# Needs scripts/lib/common.sh.

SERVER_URL=""
SERVER_PID=""
SERVER_ARTIFACT_ROOT=""
SERVER_LOG=""

start_tracking_server() {
    local kind=$1 backend=$2 workdir=$3 venv=${4:-}
    local port
    port="$(free_port)"
    SERVER_ARTIFACT_ROOT="${workdir}/artifacts"
    SERVER_LOG="${workdir}/server.log"
    mkdir -p "$SERVER_ARTIFACT_ROOT"
    local destination="$SERVER_ARTIFACT_ROOT"
    local store_env=()
    if [[ "${MLKUBE_COMPAT_ARTIFACTS:-local}" == s3 ]]; then
        # A fresh bucket on the test S3 server (scripts/lib/s3.sh); the suite cannot look inside it.
        [[ -n "${MLKUBE_TEST_S3_ENDPOINT:-}" ]] || die "MLKUBE_COMPAT_ARTIFACTS=s3 needs s3_start first"
        local bucket="compat-${RANDOM}${RANDOM}"
        curl -fsS -X PUT "${MLKUBE_TEST_S3_ENDPOINT}/${bucket}" >/dev/null || die "could not create bucket ${bucket}"
        destination="s3://${bucket}/artifacts"
        SERVER_ARTIFACT_ROOT=""
        store_env=(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
            "MLFLOW_S3_ENDPOINT_URL=${MLKUBE_TEST_S3_ENDPOINT}")
    fi
    local cmd=()
    case "$kind" in
        mlkube)
            [[ -x "${MLKUBE_SERVER_BIN:-}" ]] || die "MLKUBE_SERVER_BIN (${MLKUBE_SERVER_BIN:-unset}) is not an executable"
            cmd=("$MLKUBE_SERVER_BIN" --host 127.0.0.1 --port "$port"
                --backend-store-uri "$backend" --artifacts-destination "$destination")
            # MLflow's web UI build to serve (tests/ui sets it to the client venv's mlflow/server/js/build).
            if [[ -n "${MLKUBE_UI_DIR:-}" ]]; then
                cmd+=(--ui-dir "$MLKUBE_UI_DIR")
            fi
            ;;
        upstream)
            [[ -x "${venv}/bin/mlflow" ]] || die "no mlflow in ${venv}"
            cmd=("${venv}/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1
                --backend-store-uri "$backend" --artifacts-destination "$destination")
            ;;
        *) die "unknown server kind ${kind}" ;;
    esac
    local auth_ini=""
    if [[ "${MLKUBE_COMPAT_AUTH:-0}" == 1 ]]; then
        auth_ini="${workdir}/basic_auth.ini"
        export MLKUBE_COMPAT_ADMIN_USERNAME=admin
        MLKUBE_COMPAT_ADMIN_PASSWORD="compat-admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
        export MLKUBE_COMPAT_ADMIN_PASSWORD
        printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s\nadmin_username = %s\nadmin_password = %s\n' \
            "${workdir}/basic_auth.db" "$MLKUBE_COMPAT_ADMIN_USERNAME" "$MLKUBE_COMPAT_ADMIN_PASSWORD" >"$auth_ini"
        cmd+=(--app-name basic-auth)
    fi
    # Own session/process group, so stopping it also stops any workers it forked. The working directory
    # is WORKDIR so that nothing the server writes by default lands in the repository.
    (cd "$workdir" && if [[ -n "$auth_ini" ]]; then export MLFLOW_AUTH_CONFIG_PATH="$auth_ini"; fi &&
        NO_COLOR=1 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec env "${store_env[@]}" setsid "${cmd[@]}") >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    push_cleanup stop_tracking_server
    SERVER_URL="http://127.0.0.1:${port}"
    if ! wait_http "${SERVER_URL}/health" 120 "$SERVER_PID"; then
        log "${kind} server did not become healthy on ${SERVER_URL}; last lines of ${SERVER_LOG}:"
        tail -n 40 "$SERVER_LOG" >&2 || true
        stop_tracking_server
        return 1
    fi
    log "${kind} server up on ${SERVER_URL} (pid ${SERVER_PID}, backend ${backend})"
}

stop_tracking_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local pid=$SERVER_PID
    SERVER_PID=""
    kill -TERM -- "-${pid}" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "server ${pid} ignored SIGTERM for 10 s; killing it"
        kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
