#!/usr/bin/env python3
"""Validate mlkube's custom resources and the Prometheus Operator objects the builders render.

    validate_manifests.py CRD_DIR FILE...

Each document of each FILE is checked by kind:
  * TrackingServer / ModelDeployment: against the openAPIV3Schema of our CRD in CRD_DIR (python
    jsonschema), after which every field must be declared in the schema (what the API server
    would otherwise prune silently, i.e. a typo).
  * ServiceMonitor / PrometheusRule: against the subset of the Prometheus Operator v1 schema the
    operator uses (kubernetes-validate has no schema for them).
  * ScaledObject (keda.sh) / HTTPRoute (gateway.networking.k8s.io): against the subsets in
    fixtures/optional-api-schemas.json.
  * built-in kinds are skipped here: kubernetes-validate --strict covers them.
Exits 1 with one line per problem.
"""
import glob
import json
import os
import sys

import jsonschema
import yaml

STRING = {"type": "string"}
LABELS = {"type": "object", "additionalProperties": STRING}
META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": STRING, "namespace": STRING, "labels": LABELS, "annotations": LABELS,
                   "ownerReferences": {"type": "array"}},
    "additionalProperties": False,
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": META,
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": LABELS}, "additionalProperties": False},
                "jobLabel": STRING,
                "endpoints": {"type": "array", "items": {
                    "type": "object",
                    "required": ["port"],
                    "additionalProperties": False,
                    "properties": {"port": STRING, "path": STRING, "interval": DURATION,
                                   "scrapeTimeout": DURATION, "honorLabels": {"type": "boolean"}},
                }},
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"groups": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string", "minLength": 1}, "rules": {"type": "array", "items": {
                    "type": "object",
                    "required": ["alert", "expr"],
                    "additionalProperties": False,
                    "properties": {"alert": STRING, "expr": STRING, "for": DURATION,
                                   "labels": LABELS, "annotations": LABELS},
                }}},
            }}},
        },
    },
}


with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "optional-api-schemas.json")) as f:
    OPTIONAL_APIS = {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def undeclared(schema, value, path):
    """Paths of fields in value that schema does not declare (structural-schema pruning)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            if props is not None and key in props:
                yield from undeclared(props[key], child, f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from undeclared(extra, child, f"{path}.{key}")
            elif path == "" and key in ("apiVersion", "kind", "metadata"):
                continue
            else:
                yield f"{path}.{key}"
    elif isinstance(value, list) and "items" in schema:
        for i, child in enumerate(value):
            yield from undeclared(schema["items"], child, f"{path}[{i}]")


def main():
    crd_dir, files = sys.argv[1], sys.argv[2:]
    if not files:
        print("no files to validate", file=sys.stderr)
        return 2
    schemas = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        with open(path) as f:
            crd = yaml.safe_load(f)
        kind = crd["spec"]["names"]["kind"]
        schemas[(f'{crd["spec"]["group"]}/{crd["spec"]["versions"][0]["name"]}', kind)] = \
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    problems, checked = [], 0
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            kind, api = doc.get("kind"), doc.get("apiVersion")
            where = f'{path}: {kind}/{doc.get("metadata", {}).get("name")}'
            if (api, kind) in schemas:
                schema = schemas[(api, kind)]
                for err in jsonschema.Draft7Validator(schema).iter_errors(doc):
                    problems.append(f"{where}: {'.'.join(map(str, err.absolute_path))}: {err.message}")
                problems.extend(f"{where}: unknown field {p}" for p in undeclared(schema, doc, ""))
            elif kind == "ServiceMonitor":
                problems.extend(f"{where}: {e.message}" for e in jsonschema.Draft7Validator(SERVICE_MONITOR).iter_errors(doc))
            elif kind == "PrometheusRule":
                problems.extend(f"{where}: {e.message}" for e in jsonschema.Draft7Validator(PROMETHEUS_RULE).iter_errors(doc))
            elif f"{api}/{kind}" in OPTIONAL_APIS:
                schema = OPTIONAL_APIS[f"{api}/{kind}"]
                problems.extend(f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                                for e in jsonschema.Draft7Validator(schema).iter_errors(doc))
            elif api and api.startswith("mlkube.io/"):
                problems.append(f"{where}: no CRD for {api} {kind} in {crd_dir}")
            else:
                continue
            checked += 1
    for p in problems:
        print(p)
    print(f"validate_manifests: {checked} objects checked, {len(problems)} problems", file=sys.stderr)
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
