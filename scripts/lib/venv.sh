# shellcheck shell=bash
# Cached virtualenvs with a pinned MLflow client for the compatibility suite.
#
#   ensure_mlflow_venv VERSION   -> prints the venv directory on stdout
#
# The venv lives in $MLKUBE_CACHE_DIR/venvs/mlflow-VERSION (default .cache/ in the repo). A marker
# file records exactly what was installed; a venv whose marker does not match is rebuilt from scratch,
# so a half-finished install is never reused.

# Packages next to the MLflow client. scikit-learn and pandas drive the log_model / log_input tests;
# boto3 lets upstream `mlflow server` use an s3:// artifact destination (compat runs on S3).
_mlkube_venv_requirements() {
    local version=$1
    printf '%s\n' "mlflow==${version}" pytest requests scikit-learn pandas boto3 psycopg2-binary pymysql
    case "$version" in
        2.*) printf '%s\n' 'sqlalchemy<2.1' ;;
        # MLflow 3's mlflow.server.auth (get_app_client("basic-auth"), test_auth.py) needs its `auth` extra.
        3.*) printf '%s\n' Flask-WTF ;;
    esac
}

_mlkube_python() {
    # A python3 whose venv module can bootstrap pip; Debian splits that into python3-venv.
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        command -v python3
        return
    fi
    log "installing python3 and python3-venv"
    apt_install python3 python3-venv >&2
    command -v python3
}

ensure_mlflow_venv() {
    local version=$1
    local dir="${MLKUBE_CACHE_DIR}/venvs/mlflow-${version}"
    mkdir -p "$(dirname "$dir")"
    # Two test runs at once must not build the same venv concurrently.
    local lock_fd
    exec {lock_fd}>"${dir}.lock"
    flock "$lock_fd"
    local rc=0
    _ensure_mlflow_venv_locked "$version" "$dir" || rc=$?
    exec {lock_fd}>&-
    return "$rc"
}

_ensure_mlflow_venv_locked() {
    local version=$1 dir=$2
    local marker="${dir}/.mlkube-venv"
    local want
    want="$(_mlkube_venv_requirements "$version" | sort | tr '\n' ' ')"
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "${dir}/bin/python" ]] &&
        [[ "$("${dir}/bin/python" -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null)" == "$version" ]]; then
        log "reusing ${dir} (mlflow ${version})"
        printf '%s\n' "$dir"
        return
    fi
    log "creating ${dir} (mlflow ${version}); this takes about a minute"
    # Callers use $(...), where `set -e` does not apply: check every step explicitly.
    local python
    python="$(_mlkube_python)" || return 1
    rm -rf "$dir"
    "$python" -m venv "$dir" >&2 || return 1
    local reqs=()
    mapfile -t reqs < <(_mlkube_venv_requirements "$version")
    "${dir}/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || return 1
    "${dir}/bin/python" -m pip install --quiet --disable-pip-version-check "${reqs[@]}" >&2 || return 1
    printf '%s' "$want" >"$marker"
    printf '%s\n' "$dir"
}
