# shellcheck shell=bash
# The cached virtualenv with Kubernetes schema tools (kubernetes-validate, jsonschema, PyYAML), shared
# by scripts/check-chart.sh, scripts/validate-manifests.sh and the operator's manifest tests
# (MLKUBE_VALIDATE_VENV). Needs scripts/lib/common.sh.

K8S_VENV="${MLKUBE_CACHE_DIR}/venvs/k8s-validate"
K8S_VENV_REQUIREMENTS="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3"

# ensure_k8s_venv : create or reuse the venv; prints nothing, exports MLKUBE_VALIDATE_VENV.
ensure_k8s_venv() {
    local marker="${K8S_VENV}/.mlkube-venv"
    mkdir -p "$(dirname "$K8S_VENV")"
    local lock_fd
    exec {lock_fd}>"${K8S_VENV}.lock"
    flock "$lock_fd"
    if ! [[ -f "$marker" && "$(cat "$marker")" == "$K8S_VENV_REQUIREMENTS" && -x "${K8S_VENV}/bin/python" ]]; then
        log "creating ${K8S_VENV} (${K8S_VENV_REQUIREMENTS})"
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            apt_install python3 python3-venv
        fi
        rm -rf "$K8S_VENV"
        python3 -m venv "$K8S_VENV"
        # shellcheck disable=SC2086 # the requirements are separate words
        "${K8S_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check $K8S_VENV_REQUIREMENTS
        printf '%s' "$K8S_VENV_REQUIREMENTS" >"$marker"
    fi
    exec {lock_fd}>&-
    export MLKUBE_VALIDATE_VENV="$K8S_VENV"
}
