#!/usr/bin/env bash
# Schema checks of the operator's generated manifests, with the tools they need:
#   - kubernetes-validate --strict on every built-in object in deploy/rendered/ (PyPI),
#   - our CRD schemas on deploy/examples/ and the Prometheus Operator subset on the rendered
#     ServiceMonitors / PrometheusRules (python jsonschema),
#   - promtool check rules on deploy/rules/modeldeployment-rules.yaml (Debian prometheus),
#   - the registry client against a real mlkube-server.
# Installs what is missing (a cached venv under .cache/venvs/validate, apt for promtool), then runs
# the operator's ignored tests that use these tools. Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MLKUBE_ROOT="$(pwd)"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

venv="${MLKUBE_CACHE_DIR}/venvs/validate"
want="jsonschema kubernetes-validate pyyaml"
if [[ ! -x "${venv}/bin/kubernetes-validate" || "$(cat "${venv}/.mlkube-venv" 2>/dev/null)" != "$want" ]]; then
    log "creating ${venv} (${want})"
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "${venv}/bin/pip" install --quiet --disable-pip-version-check $want
    printf '%s' "$want" >"${venv}/.mlkube-venv"
fi
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (Debian prometheus)"
    apt_install prometheus
fi

banner "operator: manifest schema checks and promtool"
MLKUBE_VALIDATE_VENV="$venv" cargo test --locked -p mlkube-operator --test manifests -- --ignored

banner "operator: registry lookups against a real mlkube-server"
cargo build --locked -p mlkube-server
cargo test --locked -p mlkube-operator --test registry -- --ignored
