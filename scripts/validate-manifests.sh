#!/usr/bin/env bash
# Schema checks of the operator's generated manifests, with the tools they need:
#   - kubernetes-validate --strict on every built-in object in deploy/rendered/ (PyPI),
#   - our CRD schemas on deploy/examples/ and the Prometheus Operator subset on the rendered
#     ServiceMonitors / PrometheusRules (python jsonschema),
#   - promtool check rules on deploy/rules/modeldeployment-rules.yaml (Debian prometheus),
#   - the chart's RBAC (helm template) against what the operator requests,
#   - the registry client against a real mlkube-server.
# Installs what is missing (the cached venv of scripts/lib/k8s-venv.sh, apt for promtool), then runs
# the operator's ignored tests that use these tools. Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MLKUBE_ROOT="$(pwd)"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

# shellcheck source=scripts/lib/k8s-venv.sh
source scripts/lib/k8s-venv.sh
ensure_k8s_venv
# shellcheck source=scripts/lib/helm.sh
source scripts/lib/helm.sh
ensure_helm
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (Debian prometheus)"
    apt_install prometheus
fi

banner "operator: manifest schema checks and promtool"
cargo test --locked -p mlkube-operator --test manifests -- --ignored

banner "operator: the chart's RBAC against the operator's requests (helm template)"
cargo test --locked -p mlkube-operator --test rbac -- --ignored

banner "operator: registry lookups against a real mlkube-server"
cargo build --locked -p mlkube-server
cargo test --locked -p mlkube-operator --test registry -- --ignored
