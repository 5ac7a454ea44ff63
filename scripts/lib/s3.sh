# shellcheck shell=bash
# A private S3 API on 127.0.0.1 for the object-store artifact tests: moto in server mode (PyPI
# `moto[server]`), in its own cached virtualenv.
#
#   s3_start    starts it on a free port and exports MLKUBE_TEST_S3_ENDPOINT (and the AWS_* test
#               credentials moto accepts); registers nothing, call s3_stop (or push_cleanup s3_stop)
#   s3_stop     stops it (safe to call twice)
#
# Needs scripts/lib/common.sh and scripts/lib/venv.sh (for the python with venv support).

S3_VENV="${MLKUBE_CACHE_DIR}/venvs/moto"
S3_VENV_REQUIREMENTS="moto[server]==5.2.5 boto3"
S3_PID=""

ensure_moto_venv() {
    local marker="${S3_VENV}/.mlkube-venv"
    mkdir -p "$(dirname "$S3_VENV")"
    local lock_fd
    exec {lock_fd}>"${S3_VENV}.lock"
    flock "$lock_fd"
    if ! [[ -f "$marker" && "$(cat "$marker")" == "$S3_VENV_REQUIREMENTS" && -x "${S3_VENV}/bin/moto_server" ]]; then
        log "creating ${S3_VENV} (${S3_VENV_REQUIREMENTS})"
        local python
        python="$(_mlkube_python)"
        rm -rf "$S3_VENV"
        "$python" -m venv "$S3_VENV"
        # shellcheck disable=SC2086 # the requirements are separate words
        "${S3_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check $S3_VENV_REQUIREMENTS
        printf '%s' "$S3_VENV_REQUIREMENTS" >"$marker"
    fi
    exec {lock_fd}>&-
}

s3_start() {
    ensure_moto_venv
    local port
    port="$(free_port)"
    "${S3_VENV}/bin/moto_server" -H 127.0.0.1 -p "$port" >"${TMPDIR:-/tmp}/mlkube-moto-${port}.log" 2>&1 &
    S3_PID=$!
    export MLKUBE_TEST_S3_ENDPOINT="http://127.0.0.1:${port}"
    wait_http "${MLKUBE_TEST_S3_ENDPOINT}/moto-api/" 60 "$S3_PID" || die "moto did not start on ${MLKUBE_TEST_S3_ENDPOINT}"
    log "S3 API (moto) on ${MLKUBE_TEST_S3_ENDPOINT}"
}

s3_stop() {
    [[ -n "$S3_PID" ]] || return 0
    kill "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
    S3_PID=""
    unset MLKUBE_TEST_S3_ENDPOINT
}
