#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests (scripts/check-chart.sh runs this in its virtualenv).

    check-manifests.py [--restricted] [--rendered-by-operator] FILE...

Every object in FILE... (multi-document YAML):
  - built-in kinds: kubernetes-validate --strict (the Kubernetes OpenAPI schema; an unknown or
    misspelled field fails);
  - mlkube.io kinds: our CRD's openAPIV3Schema (crds/*.yaml) with python-jsonschema, unknown fields
    refused as `kubectl apply` (strict field validation) refuses them; CEL rules are not evaluated
    here (the operator's kube-cel tests cover them);
  - ServiceMonitor: selector and endpoints present, each endpoint's port is a named port of a
    Service the monitor selects (when that Service is in the same files), scrapeTimeout <= interval;
  - PrometheusRule: its groups pass `promtool check rules`.
  - ScaledObject (keda.sh/v1alpha1), HTTPRoute (gateway.networking.k8s.io/v1): the subsets of their
    CRD schemas in operator/tests/fixtures/optional-api-schemas.json; an HTTPRoute's backendRefs
    name a Service port number (when that Service is in the same files).
--restricted: every pod template meets the restricted Pod Security Standard, and mlkube's own rules
  (read-only root filesystem, automountServiceAccountToken only where the API is used).
--rendered-by-operator: the same, except the node sampler DaemonSet, which is documented to need a
  privileged namespace (hostPID, read-only hostPath mounts): it gets the checks that still apply.
Exits 1 with one line per problem.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.28", kubernetes_validate.latest_version())
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
NODE_SAMPLER = "mlkube-node-sampler"
OPTIONAL_APIS = {
    k: v
    for k, v in json.loads((ROOT / "operator/tests/fixtures/optional-api-schemas.json").read_text()).items()
    if not k.startswith("_")
}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def load_docs(path):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                yield doc


def name_of(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


# === CRD schemas ===


def structural_to_jsonschema(node):
    """A CRD openAPIV3Schema as a JSON schema with Kubernetes' semantics."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: structural_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = structural_to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural_to_jsonschema(v) for v in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "format", "example", "externalDocs"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") in ("object", ["object", "null"])
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validators():
    validators = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for crd in load_docs(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's; the CRD schema leaves it open.
                props = schema.setdefault("properties", {})
                props["metadata"] = {"type": "object"}
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                validators[key] = jsonschema.Draft7Validator(schema)
    return validators


# === Pod Security ===


def pod_spec(obj):
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    if kind in WORKLOADS:
        return (spec.get("template") or {}).get("spec")
    return None


def pod_labels(obj):
    if obj.get("kind") == "Pod":
        return (obj.get("metadata") or {}).get("labels") or {}
    return ((obj.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}


def check_pod_security(obj, problems, allow_node_sampler):
    spec = pod_spec(obj)
    if spec is None:
        return
    where = name_of(obj)
    sampler = allow_node_sampler and pod_labels(obj).get("app.kubernetes.io/name") == NODE_SAMPLER
    psc = spec.get("securityContext") or {}
    containers = [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]
    if not containers:
        problems.append(f"{where}: no containers")
    # baseline
    for field in ("hostNetwork", "hostIPC") + (() if sampler else ("hostPID",)):
        if spec.get(field):
            problems.append(f"{where}: {field} is not allowed")
    for vol in spec.get("volumes", []):
        types = set(vol) - {"name"}
        if sampler:
            if types - RESTRICTED_VOLUMES - {"hostPath"}:
                problems.append(f"{where}: volume {vol['name']} of type {sorted(types)}")
        elif types - RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {vol['name']} of type {sorted(types - RESTRICTED_VOLUMES)} is not allowed (restricted)")
    host_paths = {v["name"] for v in spec.get("volumes", []) if "hostPath" in v}
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        problems.append(f"{where}: pod seccompProfile Unconfined")
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{cw}: privileged")
        caps = sc.get("capabilities") or {}
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{cw}: adds capabilities {caps.get('add')}")
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{cw}: capabilities.drop must contain ALL")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation must be false")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{cw}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{cw}: hostPort {port['hostPort']}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cw}: readOnlyRootFilesystem must be true (mlkube's images run read-only)")
        for mount in c.get("volumeMounts", []):
            if mount.get("name") in host_paths and mount.get("readOnly") is not True:
                problems.append(f"{cw}: hostPath mount {mount['name']} must be readOnly")
        if not sampler:
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            if non_root is not True:
                problems.append(f"{cw}: runAsNonRoot must be true (pod or container)")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                problems.append(f"{cw}: runAsUser 0")


# === monitoring.coreos.com ===


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, found = 0.0, False
    for number, unit in re.findall(r"(\d+)(ms|s|m|h)", text or ""):
        total += int(number) * units[unit]
        found = True
    return total if found else None


def check_service_monitor(obj, services, problems):
    where = name_of(obj)
    spec = obj.get("spec") or {}
    if not spec.get("selector"):
        problems.append(f"{where}: no selector")
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        problems.append(f"{where}: no endpoints")
    ns = (obj.get("metadata") or {}).get("namespace")
    allowed = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "honorTimestamps", "scheme", "relabelings",
               "metricRelabelings", "params", "tlsConfig", "bearerTokenSecret", "basicAuth", "authorization",
               "oauth2", "followRedirects", "enableHttp2", "proxyUrl", "trackTimestampsStaleness", "filterRunning"}
    matched = [s for s in services
               if (s.get("metadata") or {}).get("namespace") == ns
               and selects(spec.get("selector") or {}, (s.get("metadata") or {}).get("labels") or {})]
    for ep in endpoints:
        for key in sorted(set(ep) - allowed):
            problems.append(f"{where}: unknown endpoint field {key}")
        interval, timeout = duration_seconds(ep.get("interval")), duration_seconds(ep.get("scrapeTimeout"))
        if interval and timeout and timeout > interval:
            problems.append(f"{where}: scrapeTimeout {ep.get('scrapeTimeout')} exceeds interval {ep.get('interval')}")
        for svc in matched:
            names = {p.get("name") for p in (svc.get("spec") or {}).get("ports", [])}
            if ep.get("port") not in names:
                problems.append(f"{where}: port {ep.get('port')!r} is not a named port of {name_of(svc)} ({sorted(names)})")


def check_http_route(obj, services, problems):
    ns = (obj.get("metadata") or {}).get("namespace")
    for rule in (obj.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            for svc in services:
                meta = svc.get("metadata") or {}
                if meta.get("name") == ref.get("name") and meta.get("namespace") == ns:
                    ports = {p.get("port") for p in (svc.get("spec") or {}).get("ports", [])}
                    if ref.get("port") not in ports:
                        problems.append(f"{name_of(obj)}: backendRef port {ref.get('port')} is not a port of {name_of(svc)} ({sorted(ports)})")


def check_prometheus_rules(rules_objects, problems):
    if not rules_objects:
        return
    promtool = shutil.which("promtool")
    if not promtool:
        problems.append("promtool not found (apt-get install prometheus)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, obj in enumerate(rules_objects):
            path = Path(tmp) / f"{i}.yaml"
            path.write_text(yaml.safe_dump({"groups": (obj.get("spec") or {}).get("groups", [])}))
            paths.append((obj, path))
        for obj, path in paths:
            out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
            if out.returncode != 0:
                problems.append(f"{name_of(obj)}: promtool check rules failed:\n{out.stdout}{out.stderr}")


def main(argv):
    restricted = "--restricted" in argv
    by_operator = "--rendered-by-operator" in argv
    files = [a for a in argv if not a.startswith("--")]
    problems = []
    validators = crd_validators()
    objects = []
    for path in files:
        for obj in load_docs(path):
            objects.append((path, obj))
    services = [o for _, o in objects if o.get("kind") == "Service"]
    rule_objects = []
    counts = {"built-in": 0, "custom": 0, "monitoring": 0}
    for path, obj in objects:
        where = f"{Path(path).name}: {name_of(obj)}"
        api = obj.get("apiVersion", "")
        kind = obj.get("kind", "")
        if not api or not kind:
            problems.append(f"{where}: no apiVersion/kind")
            continue
        if (api, kind) in validators:
            counts["custom"] += 1
            for err in sorted(validators[(api, kind)].iter_errors(obj), key=lambda e: list(e.path)):
                loc = "/".join(str(p) for p in err.path) or "(root)"
                problems.append(f"{where}: {loc}: {err.message}")
        elif api.startswith("monitoring.coreos.com/"):
            counts["monitoring"] += 1
            if kind == "ServiceMonitor":
                check_service_monitor(obj, services, problems)
            elif kind == "PrometheusRule":
                rule_objects.append(obj)
            else:
                problems.append(f"{where}: unexpected kind")
        elif f"{api}/{kind}" in OPTIONAL_APIS:
            counts["custom"] += 1
            for err in jsonschema.Draft7Validator(OPTIONAL_APIS[f"{api}/{kind}"]).iter_errors(obj):
                loc = "/".join(str(p) for p in err.path) or "(root)"
                problems.append(f"{where}: {loc}: {err.message}")
            if kind == "HTTPRoute":
                check_http_route(obj, services, problems)
        elif api.startswith("mlkube.io/"):
            problems.append(f"{where}: no CRD in crds/ defines {api} {kind}")
        else:
            counts["built-in"] += 1
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)
                except kubernetes_validate.ValidationError as err:
                    loc = "/".join(str(p) for p in err.path) or "(root)"
                    problems.append(f"{where}: Kubernetes {version}: {loc}: {err.message}")
                except kubernetes_validate.SchemaNotFoundError as err:
                    problems.append(f"{where}: {err.message}")
        if restricted or by_operator:
            check_pod_security(obj, problems, allow_node_sampler=by_operator)
    check_prometheus_rules(rule_objects, problems)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    if problems:
        print(f"check-manifests: {len(problems)} problems in {len(objects)} objects ({summary})", file=sys.stderr)
        return 1
    mode = " restricted" if restricted else (" restricted except node sampler" if by_operator else "")
    print(f"check-manifests: ok, {len(objects)} objects ({summary}){mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
