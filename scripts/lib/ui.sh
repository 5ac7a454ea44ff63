# shellcheck shell=bash
# What the browser test of MLflow's web UI (tests/ui) needs on top of the MLflow client venvs:
#
#   ensure_ui_browser   installs Debian's chromium (and a font) when missing; exports MLKUBE_UI_CHROMIUM
#   ensure_ui_venv      creates or reuses $MLKUBE_CACHE_DIR/venvs/ui-browser with Playwright's Python
#                       driver; prints the venv directory on stdout
#
# Playwright drives the system chromium through `executable_path`; `playwright install` is never run
# (it downloads browser builds from a CDN this machine cannot reach). Needs scripts/lib/common.sh.

UI_VENV="${MLKUBE_CACHE_DIR}/venvs/ui-browser"
UI_VENV_REQUIREMENTS="playwright==1.65.2"

ensure_ui_browser() {
    local bin="${MLKUBE_UI_CHROMIUM:-}"
    if [[ -z "$bin" ]]; then
        bin="$(command -v chromium || command -v chromium-browser || true)"
    fi
    if [[ -z "$bin" ]]; then
        log "installing Debian's chromium for the UI test"
        apt_install chromium fonts-dejavu-core >&2
        bin="$(command -v chromium)" || die "chromium installed but not on PATH"
    fi
    [[ -x "$bin" ]] || die "MLKUBE_UI_CHROMIUM (${bin}) is not an executable"
    export MLKUBE_UI_CHROMIUM="$bin"
}

ensure_ui_venv() {
    local marker="${UI_VENV}/.mlkube-venv"
    mkdir -p "$(dirname "$UI_VENV")"
    # Two runs at once must not build the same venv concurrently.
    local lock_fd rc=0
    exec {lock_fd}>"${UI_VENV}.lock"
    flock "$lock_fd"
    if [[ -f "$marker" && "$(cat "$marker")" == "$UI_VENV_REQUIREMENTS" && -x "${UI_VENV}/bin/python" ]]; then
        log "reusing ${UI_VENV} (${UI_VENV_REQUIREMENTS})"
    else
        log "creating ${UI_VENV} (${UI_VENV_REQUIREMENTS})"
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            apt_install python3 python3-venv >&2
        fi
        # Callers use $(...), where `set -e` does not apply: check every step.
        rm -rf "$UI_VENV"
        {
            python3 -m venv "$UI_VENV" >&2 &&
                # shellcheck disable=SC2086 # the requirements are separate words
                "${UI_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check $UI_VENV_REQUIREMENTS >&2 &&
                printf '%s' "$UI_VENV_REQUIREMENTS" >"$marker"
        } || rc=1
    fi
    exec {lock_fd}>&-
    ((rc == 0)) || return 1
    printf '%s\n' "$UI_VENV"
}

# mlflow_ui_build_dir VENV : print the web UI build shipped in VENV's mlflow package (index.html inside).
mlflow_ui_build_dir() {
    local venv=$1 dir
    for dir in "$venv"/lib/python3*/site-packages/mlflow/server/js/build; do
        if [[ -f "${dir}/index.html" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    log "no mlflow/server/js/build/index.html in ${venv}"
    return 1
}
