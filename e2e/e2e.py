#!/usr/bin/env python3
"""mlkube end to end: the whole monitoring stack on 127.0.0.1, proven through Prometheus's HTTP API.

Run it through `e2e/run`, which builds the binaries, installs Prometheus and runs this file with the
cached MLflow virtualenv's Python (it needs mlflow, scikit-learn, pandas, requests and PyYAML).

What it emulates, and from where:
  * The "cluster" is the operator's own output for the examples, deploy/rendered/ (kept byte-for-byte
    equal to the builders' output by operator/tests/generated.rs): the `mlflow` TrackingServer
    (trackingserver-sqlite.yaml), the `churn` ModelDeployment (modeldeployment.yaml, 2 replicas) and
    the node sampler of trackingserver-postgres.yaml. Every Deployment/DaemonSet becomes local "pods":
    each container runs the binary its image would run, with the args and env the builder wrote,
    localized (ports, paths, service URLs) and with test-time intervals.
  * Prometheus's scrape config is derived from the rendered ServiceMonitors the way Prometheus
    Operator derives it: ServiceMonitor -> Services by label -> pods by selector -> container port by
    name; the same path, scheme, honorLabels and relabelings, plus the operator's standard target
    labels (namespace, service, pod, container, endpoint, job). Intervals are shortened to 1s.
  * Alert rules are deploy/rules/*.yaml (the fleet rules and the PrometheusRules the operator builds
    for the examples), copied with `for:` shortened to 5s and range selectors to 30s, so an alert can
    fire and resolve within the run.
  * Replica churn-0's model server is the real `mlflow models serve`; replica churn-1's is a tiny
    Python proxy in front of the same scoring process, whose delay the test controls (the slow replica).
  * Autoscaling: with requests held in flight on the slow replica, the per-pod in-flight series an HPA
    scales on has data for every pod, and the Prometheus Adapter rule the chart ships
    (charts/mlkube/prometheus-adapter/config.yaml), templated as the adapter templates it for
    `kubectl get --raw /apis/custom.metrics.k8s.io/.../pods/*/mlflow_inference_in_flight`, returns the
    number held per pod; so does the query of a KEDA ScaledObject's default trigger.
  * Canary rollout: the rendered canary example (modeldeployment-canary.yaml: a stable Deployment of
    `recsys` v3 and a canary Deployment of v4 behind one Service and ServiceMonitor) runs as one
    stable pod and two canary pods (v4, and v5 standing for a second candidate), their sidecars in
    front of the real scoring process; Prometheus reloads with the ServiceMonitor's scrape job.
    Ground truth is right for v3, agrees with v5's answers and is inverted for v4's request ids. The operator's
    canary-analysis binary judges the example's ModelDeployment (test-time sizes) against the real
    Prometheus and the real quality API: v4 is held before its labels are due, then rolled back on
    accuracy alone; v5 advances and, at its last step, is promoted; the stable pod answers 200 all
    along. There is no Kubernetes API here, so no mlkube-operator runs: dashboard panels on its own
    series (mlkube_operator_*) are expected empty.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import itertools
import json
import math
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
RENDERED = ROOT / "deploy" / "rendered"
RULES = ROOT / "deploy" / "rules"
EXAMPLE_MODEL_DEPLOYMENT = ROOT / "deploy" / "examples" / "modeldeployment.yaml"

# Test-time compression.
SCRAPE_INTERVAL = "1s"
RULE_FOR = "5s"
RULE_RANGE = "30s"
STATISTICS_INTERVAL = 2
MONITORING_INTERVAL = 2
SLOW_DELAY_S = 0.8  # above the churn example's latencyP99 (500ms), below its request timeout
HELD_DELAY_S = 5.0  # requests held in flight for the autoscaling checks (several 1s scrapes, under the 10s timeout)
HELD_REQUESTS = 3  # requests in flight on the slow replica while they are held
ADAPTER_RULES = ROOT / "charts" / "mlkube" / "prometheus-adapter" / "config.yaml"
IN_FLIGHT = "mlflow_inference_in_flight"
# Canary rollout (point 9): the operator's rendered canary example (a stable and a canary Deployment of
# `recsys` behind one Service and ServiceMonitor) and its ModelDeployment, judged by canary-analysis.
CANARY_RENDERED = "modeldeployment-canary.yaml"
CANARY_EXAMPLE = ROOT / "deploy" / "examples" / "modeldeployment-canary.yaml"
CANARY_REQUESTS = 320  # request i goes to: i % 4 in (0, 1) stable, 2 the bad canary, 3 the good canary
CANARY_LABEL_DELAY_S = 3
SCORE_FIELD = "/predictions/0/1"  # P(churn) in the model's predict_proba output

# The rendered objects that make up the local cluster: (file, predicate on the object).
CLUSTER = [
    ("trackingserver-sqlite.yaml", lambda o: True),
    ("modeldeployment.yaml", lambda o: True),
    (
        "trackingserver-postgres.yaml",
        lambda o: o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "node-sampler",
    ),
]
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
NODE_NAME = "e2e-node"
FEATURES = ["tenure_months", "monthly_charges", "support_calls", "contract_months"]

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')} +{time.monotonic() - T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


class Fatal(Exception):
    """Stops the run: something the rest depends on is broken."""


# --------------------------------------------------------------------------------------------------
# checks, processes, waiting


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, bool(ok), detail))
        log(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return bool(ok)

    def require(self, name: str, ok: bool, detail: str = "") -> None:
        if not self.check(name, ok, detail):
            raise Fatal(f"{name}: {detail}")

    @property
    def passed(self) -> int:
        return sum(1 for _, ok, _ in self.results if ok)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.results if not ok)


class Procs:
    """Child processes, each in its own session (so a stop takes its whole process tree); their ids
    are listed in WORK/pgids for e2e/run's trap, in case this process dies without cleaning up."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.logdir = work / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.pidfile = work / "pgids"
        self.lock = threading.Lock()

    def _write_pidfile(self) -> None:
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text("".join(f"{p.pid} {n}\n" for n, p in self.procs.items()))
        tmp.replace(self.pidfile)

    def log_path(self, name: str) -> Path:
        return self.logdir / f"{name.replace('/', '.')}.log"

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        with open(self.log_path(name), "ab") as out:
            out.write(f"\n### {time.strftime('%H:%M:%S')} {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(cwd or self.work), start_new_session=True,
            )
        with self.lock:
            self.procs[name] = proc
            self._write_pidfile()
        log(f"started {name} (pid {proc.pid}): {shlex.join(cmd)}")
        return proc

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stop(self, name: str, timeout: float = 10) -> None:
        with self.lock:
            proc = self.procs.pop(name, None)
            self._write_pidfile()
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} ignored SIGTERM for {timeout:.0f}s; killing it")
        # Whatever is left of its process group (workers outliving their parent) goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def tail(self, name: str, n: int = 30) -> str:
        try:
            lines = self.log_path(name).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    | " + line for line in lines[-n:])


class Deadline:
    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


DEADLINE = Deadline(540)


def wait_until(desc: str, fn, timeout: float, interval: float = 0.5, procs: Procs | None = None, watch=()):
    """Call fn until it returns something truthy; Fatal on timeout (or when a watched process died)."""
    timeout = min(timeout, max(DEADLINE.left(), 1))
    end = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - anything means "not yet"
            last = f"{type(exc).__name__}: {exc}"
        for name in watch:
            if procs is not None and not procs.alive(name):
                raise Fatal(f"{name} exited while waiting for {desc}; its log:\n{procs.tail(name)}")
        if time.monotonic() >= end:
            raise Fatal(f"timed out after {timeout:.0f}s waiting for {desc} (last: {str(last)[:500]})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 2) -> bool:
    return requests.get(url, timeout=timeout).status_code == 200


# --------------------------------------------------------------------------------------------------
# the local cluster, derived from the operator's rendered objects


def sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def labels_match(labels: dict, selector: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class Pod:
    def __init__(self, name: str, namespace: str, workload: dict, index: int) -> None:
        self.name = name
        self.namespace = namespace
        self.workload = workload
        self.index = index
        template = workload["spec"]["template"]
        self.labels: dict[str, str] = dict(template["metadata"].get("labels", {}))
        self.containers: list[dict] = template["spec"]["containers"]
        # (container name, port name or number) -> local port for every declared container port
        self.ports: dict[tuple[str, str], int] = {}
        for c in self.containers:
            for p in c.get("ports", []):
                local = free_port()
                self.ports[(c["name"], str(p["containerPort"]))] = local
                if "name" in p:
                    self.ports[(c["name"], p["name"])] = local

    def container(self, name: str) -> dict:
        for c in self.containers:
            if c["name"] == name:
                return c
        raise Fatal(f"pod {self.name} has no container {name}")

    def resolve_port(self, target) -> tuple[str, int]:
        """A Service targetPort (name or number) -> (container name, local port)."""
        for (cname, key), local in self.ports.items():
            if key == str(target):
                return cname, local
        raise Fatal(f"pod {self.name}: no container port {target!r}")

    def port(self, container: str, name: str) -> int:
        return self.ports[(container, name)]


class Cluster:
    def __init__(self, files=CLUSTER, replicas: dict[str, int] | None = None) -> None:
        """The objects of `files` ((file, predicate) pairs) and their local pods; `replicas` overrides
        the replica count of the named workloads."""
        self.objects: list[dict] = []
        for file, keep in files:
            path = RENDERED / file
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and keep(doc):
                    doc["_file"] = file
                    self.objects.append(doc)
        self.pods: list[Pod] = []
        for w in self.kind(*WORKLOAD_KINDS):
            n = 1 if w["kind"] == "DaemonSet" else int(w["spec"].get("replicas", 1))
            n = (replicas or {}).get(w["metadata"]["name"], n)
            for i in range(n):
                name = f"{w['metadata']['name']}-e2e-{i}"
                self.pods.append(Pod(name, w["metadata"]["namespace"], w, i))

    def kind(self, *kinds: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] in kinds]

    def pods_of(self, workload_name: str) -> list[Pod]:
        return [p for p in self.pods if p.workload["metadata"]["name"] == workload_name]

    def service_pods(self, svc: dict) -> list[Pod]:
        sel = svc["spec"].get("selector") or {}
        ns = svc["metadata"]["namespace"]
        return [p for p in self.pods if p.namespace == ns and sel and labels_match(p.labels, sel)]

    def service_urls(self) -> dict[str, str]:
        """In-cluster service URLs (`http://svc.ns.svc:port`) -> the first local pod behind them."""
        urls = {}
        for svc in self.kind("Service"):
            pods = self.service_pods(svc)
            if not pods:
                continue
            name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
            for sp in svc["spec"]["ports"]:
                _, local = pods[0].resolve_port(sp.get("targetPort", sp["port"]))
                for host in (f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
                    urls[f"http://{host}:{sp['port']}"] = f"http://127.0.0.1:{local}"
        return urls

    def scrape_configs(self) -> tuple[list[dict], list[dict]]:
        """Prometheus scrape jobs for every ServiceMonitor, as Prometheus Operator would generate them,
        with test-time intervals; and a description of each target for the summary."""
        jobs, described = [], []
        known_endpoint_fields = {
            "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
            "honorTimestamps", "relabelings", "metricRelabelings",
        }
        for sm in self.kind("ServiceMonitor"):
            ns, name = sm["metadata"]["namespace"], sm["metadata"]["name"]
            spec = sm["spec"]
            selector = spec.get("selector", {})
            if set(selector) - {"matchLabels"}:
                raise Fatal(f"ServiceMonitor {name}: e2e only emulates selector.matchLabels, got {selector}")
            nss = spec.get("namespaceSelector", {})
            namespaces = None if nss.get("any") else set(nss.get("matchNames") or [ns])
            services = [
                s for s in self.kind("Service")
                if (namespaces is None or s["metadata"]["namespace"] in namespaces)
                and labels_match(s["metadata"].get("labels", {}), selector.get("matchLabels", {}))
            ]
            if not services:
                raise Fatal(f"ServiceMonitor {ns}/{name} selects no Service among the rendered objects")
            for i, ep in enumerate(spec["endpoints"]):
                unknown = set(ep) - known_endpoint_fields
                if unknown:
                    raise Fatal(f"ServiceMonitor {ns}/{name}: e2e cannot emulate endpoint fields {sorted(unknown)}"
                                " yet; teach e2e/e2e.py how Prometheus Operator maps them")
                static = []
                for svc in services:
                    for sp in svc["spec"]["ports"]:
                        if "port" in ep and sp.get("name") != ep["port"]:
                            continue
                        target = ep.get("targetPort", sp.get("targetPort", sp["port"]))
                        for pod in self.service_pods(svc):
                            container, local = pod.resolve_port(target)
                            meta = {
                                "__meta_kubernetes_namespace": pod.namespace,
                                "__meta_kubernetes_service_name": svc["metadata"]["name"],
                                "__meta_kubernetes_pod_name": pod.name,
                                "__meta_kubernetes_pod_container_name": container,
                                "__meta_kubernetes_pod_node_name": NODE_NAME,
                                "__meta_kubernetes_pod_ready": "true",
                                "__meta_kubernetes_endpoint_port_name": sp.get("name", ""),
                            }
                            for k, v in pod.labels.items():
                                meta[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
                                meta[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
                            for k, v in svc["metadata"].get("labels", {}).items():
                                meta[f"__meta_kubernetes_service_label_{sanitize(k)}"] = v
                                meta[f"__meta_kubernetes_service_labelpresent_{sanitize(k)}"] = "true"
                            static.append({"targets": [f"127.0.0.1:{local}"], "labels": meta})
                            described.append({
                                "job": f"serviceMonitor/{ns}/{name}/{i}", "pod": pod.name, "container": container,
                                "address": f"127.0.0.1:{local}", "interval": ep.get("interval", "30s"),
                                "path": ep.get("path", "/metrics"),
                            })
                if not static:
                    raise Fatal(f"ServiceMonitor {ns}/{name} endpoint {i} ({ep.get('port')}) matches no pod port")
                # Prometheus Operator's standard target labels, then the ServiceMonitor's relabelings.
                relabel = [
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                ]
                for lbl in spec.get("targetLabels", []):
                    relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(lbl)}"],
                                    "target_label": sanitize(lbl), "regex": "(.+)", "replacement": "${1}"})
                for lbl in spec.get("podTargetLabels", []):
                    relabel.append({"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(lbl)}"],
                                    "target_label": sanitize(lbl), "regex": "(.+)", "replacement": "${1}"})
                relabel.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job",
                                "replacement": "${1}"})
                if spec.get("jobLabel"):
                    relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(spec['jobLabel'])}"],
                                    "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
                relabel.append({"target_label": "endpoint", "replacement": str(ep.get("port", ep.get("targetPort", "")))})
                relabel += [convert_relabel(r, f"{name} relabelings") for r in ep.get("relabelings", [])]
                job = {
                    "job_name": f"serviceMonitor/{ns}/{name}/{i}",
                    "honor_labels": bool(ep.get("honorLabels", False)),
                    "honor_timestamps": bool(ep.get("honorTimestamps", True)),
                    "scrape_interval": SCRAPE_INTERVAL,
                    "scrape_timeout": SCRAPE_INTERVAL,
                    "metrics_path": ep.get("path", "/metrics"),
                    "scheme": ep.get("scheme", "http"),
                    "static_configs": static,
                    "relabel_configs": relabel,
                }
                if ep.get("params"):
                    job["params"] = ep["params"]
                if ep.get("metricRelabelings"):
                    job["metric_relabel_configs"] = [convert_relabel(r, f"{name} metricRelabelings")
                                                     for r in ep["metricRelabelings"]]
                jobs.append(job)
        return jobs, described


def convert_relabel(r: dict, where: str) -> dict:
    names = {"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label",
             "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}
    out = {}
    for k, v in r.items():
        if k not in names:
            raise Fatal(f"{where}: unknown relabel field {k}")
        out[names[k]] = v.lower() if k == "action" else v
    return out


def override_flags(args: list[str], overrides: dict[str, str | None]) -> list[str]:
    """Replace the value of each `--flag value` (or `--flag=value`) in args; append flags not there.
    A None value means a switch without a value."""
    args = list(args)
    for flag, value in overrides.items():
        for i, a in enumerate(args):
            if a == flag:
                if value is not None:
                    args[i + 1] = value
                break
            if a.startswith(flag + "="):
                args[i] = f"{flag}={value}"
                break
        else:
            args += [flag] if value is None else [flag, value]
    return args


def container_env(pod: Pod, container: dict, urls: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = localize(e["value"], urls)
        else:
            ref = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            fields = {"spec.nodeName": NODE_NAME, "metadata.name": pod.name, "metadata.namespace": pod.namespace,
                      "status.podIP": "127.0.0.1"}
            if ref in fields:
                env[e["name"]] = fields[ref]
            # secretKeyRef and friends: nothing in the emulated cluster needs them
    env.update(overrides)
    return env


def localize(value: str, urls: dict[str, str]) -> str:
    for cluster_url, local in urls.items():
        value = value.replace(cluster_url, local)
    return value


def expand_args(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command and args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


# --------------------------------------------------------------------------------------------------
# Prometheus


def rewrite_rules(dst: Path) -> list[str]:
    """deploy/rules/*.yaml with test-time `for:` and range selectors; returns the alert names."""
    dst.mkdir(parents=True, exist_ok=True)
    alerts = []
    for f in sorted(RULES.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        for group in doc.get("groups", []):
            if "interval" in group:
                group["interval"] = SCRAPE_INTERVAL
            for rule in group.get("rules", []):
                if "for" in rule:
                    rule["for"] = RULE_FOR
                rule["expr"] = re.sub(r"\[\d+(?:ms|s|m|h|d|w|y)\]", f"[{RULE_RANGE}]", str(rule["expr"]))
                if "alert" in rule:
                    alerts.append(rule["alert"])
        (dst / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return alerts


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params):
        r = requests.get(self.url + path, params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise Fatal(f"Prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        res = self.query(expr, at)
        return float(res[0]["value"][1]) if res else None

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets", state="active")["activeTargets"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def alert(self, name: str, state: str | None = None, **labels) -> list[dict]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == name
                and (state is None or a["state"] == state)
                and all(a["labels"].get(k) == v for k, v in labels.items())]


# --------------------------------------------------------------------------------------------------
# the model


def churn_rows(rng: random.Random, n: int) -> tuple[list[list], list[int]]:
    """Synthetic customers: churn is likelier with short tenure, high charges, many support calls and
    short contracts; labels are drawn from that probability, so no model is perfect (accuracy ~0.8)."""
    rows, labels = [], []
    for _ in range(n):
        tenure = rng.randint(0, 72)
        charges = round(rng.uniform(20, 120), 2)
        calls = min(int(rng.expovariate(0.6)), 9)
        contract = rng.choice([1, 12, 24])
        z = -0.4 - 0.05 * tenure + 0.025 * charges + 0.45 * calls - 0.08 * contract
        labels.append(1 if rng.random() < 1 / (1 + math.exp(-z)) else 0)
        rows.append([tenure, charges, calls, contract])
    return rows, labels


def train_and_register(tracking_uri: str, model_name: str, alias: str) -> dict:
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("churn-e2e")
    rows, labels = churn_rows(random.Random(7), 2000)
    X = pd.DataFrame(rows, columns=FEATURES).astype({"monthly_charges": "float64"})
    y = pd.Series(labels, name="churned")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    with mlflow.start_run(run_name="train-churn") as run:
        mlflow.log_params({"model": "logistic_regression", "rows": len(X), "features": ",".join(FEATURES)})
        mlflow.log_input(mlflow.data.from_pandas(X.assign(churned=y), name="churn-train", targets="churned"),
                         context="training")
        pipe.fit(X, y)
        mlflow.log_metric("train_accuracy", float(pipe.score(X, y)))
        info = mlflow.sklearn.log_model(
            pipe, name="model", registered_model_name=model_name, input_example=X.head(3),
            signature=infer_signature(X, pipe.predict_proba(X.head(3))), pyfunc_predict_fn="predict_proba",
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model_name, alias, version)
    got = client.get_model_version_by_alias(model_name, alias)
    if str(got.version) != version:
        raise Fatal(f"alias {alias} resolves to version {got.version}, expected {version}")
    return {"version": version, "run_id": run.info.run_id, "train_accuracy": float(pipe.score(X, y))}


# --------------------------------------------------------------------------------------------------
# traffic


class SlowUpstream:
    """A model server we control for replica churn-1: forwards to the real scoring server after
    `delay` seconds (on POST), answers 502 when that server is down."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.delay = 0.0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # noqa: D102 - quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self):
                body = self._body()
                if self.command == "POST" and outer.delay:
                    time.sleep(outer.delay)
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() in ("content-type", "accept", "x-request-id")}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data, status = resp.read(), resp.status
                    ctype = resp.getheader("Content-Type", "application/json")
                    conn.close()
                except OSError as exc:
                    status, ctype, data = 502, "text/plain", f"model server unavailable: {exc}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 64
            daemon_threads = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="slow-upstream", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_local = threading.local()


def predict(url: str, row: list, timeout: float = 20) -> dict:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    payload = {"dataframe_split": {"columns": FEATURES, "data": [row]}}
    t = time.monotonic()
    try:
        r = session.post(url + "/invocations", json=payload, timeout=timeout)
    except requests.RequestException as exc:
        return {"status": 0, "error": str(exc), "latency": time.monotonic() - t, "url": url}
    out = {"status": r.status_code, "request_id": r.headers.get("X-Request-ID"), "latency": time.monotonic() - t,
           "url": url}
    if r.status_code == 200:
        out["score"] = float(r.json()["predictions"][0][1])
    else:
        out["error"] = r.text[:200]
    return out


class TrafficLoop:
    """Background traffic at a steady pace until stopped; keeps every result."""

    def __init__(self, urls: list[str], threads: int = 1, pause: float = 0.1, seed: int = 99) -> None:
        self.urls, self.pause = urls, pause
        self.results: list[dict] = []
        self.stop_event = threading.Event()
        self.rng = random.Random(seed)
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop_event.is_set():
            with self.lock:
                i = next(self.counter)
                row = churn_rows(self.rng, 1)[0][0]
            res = predict(self.urls[i % len(self.urls)], row)
            res["t"] = time.time()
            with self.lock:
                self.results.append(res)
            self.stop_event.wait(self.pause)

    def stop(self) -> list[dict]:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        return self.results


class KubeStateMetrics:
    """What kubelet and kube-state-metrics (part of kube-prometheus-stack) would report for the local
    pods: each container's readinessProbe from the rendered pod spec, run like kubelet runs it
    (period shortened to 1s; failureThreshold and successThreshold as written), exported as
    `kube_pod_container_status_ready{namespace, pod, container}`, which MlkubeSidecarNotReady reads."""

    def __init__(self, port: int, pods: list[Pod]) -> None:
        self.probes = []
        for pod in pods:
            for c in pod.containers:
                probe = c.get("readinessProbe") or {}
                get = probe.get("httpGet")
                if not get:
                    continue
                _, local = pod.resolve_port(get["port"])
                self.probes.append({
                    "pod": pod, "container": c["name"], "url": f"http://127.0.0.1:{local}{get.get('path', '/')}",
                    "failure": int(probe.get("failureThreshold", 3)), "success": int(probe.get("successThreshold", 1)),
                    "timeout": min(float(probe.get("timeoutSeconds", 1)), 1.0), "ready": False, "fails": 0, "oks": 0,
                })
        self.stop_event = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                lines = ["# TYPE kube_pod_container_status_ready gauge"]
                for p in outer.probes:
                    lines.append(f'kube_pod_container_status_ready{{namespace="{p["pod"].namespace}",'
                                 f'pod="{p["pod"].name}",container="{p["container"]}"}} {int(p["ready"])}')
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="ksm", daemon=True).start()
        threading.Thread(target=self._probe_loop, name="kubelet-probes", daemon=True).start()

    def _probe_loop(self) -> None:
        while not self.stop_event.wait(1.0):
            for p in self.probes:
                try:
                    ok = 200 <= requests.get(p["url"], timeout=p["timeout"]).status_code < 400
                except requests.RequestException:
                    ok = False
                p["fails"], p["oks"] = (0, p["oks"] + 1) if ok else (p["fails"] + 1, 0)
                if ok and p["oks"] >= p["success"]:
                    p["ready"] = True
                elif not ok and p["fails"] >= p["failure"]:
                    p["ready"] = False

    def close(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------------
# the run


class E2E:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(args.work)
        self.bin_dir = Path(args.bin_dir)
        self.venv = Path(args.venv)
        self.checks = Checks()
        self.procs = Procs(self.work)
        self.slow: SlowUpstream | None = None
        self.ksm: KubeStateMetrics | None = None
        self.summary: dict = {"alerts": {}}
        example = yaml.safe_load(EXAMPLE_MODEL_DEPLOYMENT.read_text())
        self.model_name = example["spec"]["model"]["name"]
        self.alias = example["spec"]["model"]["alias"]
        self.md_name = example["metadata"]["name"]

    # ---- helpers
    def binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise Fatal(f"{path} is missing: build it first (e2e/run does: cargo build -p mlkube-server "
                        "-p mlkube-sidecar -p mlkube-node-sampler; cargo build -p mlkube-operator --bin canary-analysis)")
        return str(path)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLKUBE_", "MLFLOW_"))}
        env["NO_COLOR"] = "1"
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start_container(self, pod: Pod, cname: str, cmd: list[str], env_overrides: dict[str, str] | None = None,
                        flag_overrides: dict | None = None) -> str:
        container = pod.container(cname)
        env = self.base_env()
        cenv = container_env(pod, container, self.urls, env_overrides or {})
        env.update(cenv)
        args = expand_args([localize(a, self.urls) for a in (container.get("command") or [])[len(cmd):]
                            + (container.get("args") or [])], cenv)
        args = override_flags(args, flag_overrides or {})
        name = f"{pod.name}/{cname}"
        self.procs.start(name, cmd + args, env=env, cwd=self.work)
        return name

    # ---- 1: tracking server, model
    def start_tracking_server(self) -> None:
        (pod,) = [p for p in self.cluster.pods if p.labels.get("app.kubernetes.io/component") == "tracking-server"]
        self.server_pod = pod
        port = pod.port("mlkube-server", "http")
        self.server_url = f"http://127.0.0.1:{port}"
        # the in-cluster URLs of the services now point at the local pods
        self.urls = self.cluster.service_urls()
        (self.work / "artifacts").mkdir(exist_ok=True)
        self.server_proc = self.start_container(pod, "mlkube-server", [self.binary("mlkube-server")], flag_overrides={
            "--host": "127.0.0.1",
            "--port": str(port),
            "--backend-store-uri": f"sqlite:///{self.work / 'mlflow.db'}",  # absolute: sqlite:////…
            "--artifacts-destination": str(self.work / "artifacts"),
            "--expose-prometheus": str(self.work / "prometheus-multiproc"),
            "--statistics-update-interval": str(STATISTICS_INTERVAL),
            "--monitoring-evaluation-interval": str(MONITORING_INTERVAL),
        })
        wait_until("the tracking server's /health", lambda: http_ok(self.server_url + "/health"), 60,
                   procs=self.procs, watch=[self.server_proc])
        self.checks.check("tracking server healthy", True, self.server_url)

    def train(self) -> None:
        log(f"training and registering {self.model_name!r} with the MLflow client against {self.server_url}")
        t = time.monotonic()
        self.model = train_and_register(self.server_url, self.model_name, self.alias)
        self.checks.check(
            "model trained, registered and aliased", True,
            f"{self.model_name} v{self.model['version']} @{self.alias}, run {self.model['run_id']}, "
            f"train accuracy {self.model['train_accuracy']:.3f} ({time.monotonic() - t:.0f}s)")
        # A quality monitor on the served version (the example's quality threshold: accuracy >= 0.9).
        r = requests.post(self.server_url + "/api/2.0/mlkube/monitors/create", json={
            "name": f"{self.model_name}-accuracy", "model_name": self.model_name,
            "model_version": self.model["version"], "metric": "accuracy", "window": "1h", "threshold": 0.9,
            "score_field": "/predictions/0/1",
        }, timeout=10)
        self.checks.require("quality monitor created (accuracy >= 0.9 over 1h, as the example's threshold)",
                            r.status_code == 200, "" if r.status_code == 200 else f"{r.status_code} {r.text[:300]}")

    # ---- 2, 3: model server, sidecars, node sampler
    def start_serving(self) -> None:
        pods = self.cluster.pods_of(self.md_name)
        if len(pods) < 2:
            raise Fatal(f"the {self.md_name} example renders {len(pods)} replica(s); e2e needs 2 (one slow)")
        self.model_pods = pods
        self.model_port = free_port()
        self.start_model_server()
        slow_port = free_port()
        self.slow = SlowUpstream(slow_port, self.model_port)
        self.sidecars = []
        for pod, upstream in ((pods[0], self.model_port), (pods[1], slow_port)):
            name = self.start_container(pod, "mlkube-sidecar", [self.binary("mlkube-sidecar")], flag_overrides={
                "--listen": f"127.0.0.1:{pod.port('mlkube-sidecar', 'http')}",
                "--metrics-listen": f"127.0.0.1:{pod.port('mlkube-sidecar', 'metrics')}",
                "--upstream": f"http://127.0.0.1:{upstream}",
                "--model-name": self.model_name,
                "--model-version": self.model["version"],
                "--run-id": self.model["run_id"],
                "--tracking-uri": self.server_url,
                "--capture-sample-rate": "1",
                "--upstream-health-interval": "0.5",
                "--capture-flush-interval": "1",
                "--request-timeout": "10",
            })
            self.sidecars.append({
                "pod": pod.name, "proc": name,
                "url": f"http://127.0.0.1:{pod.port('mlkube-sidecar', 'http')}",
                "admin": f"http://127.0.0.1:{pod.port('mlkube-sidecar', 'metrics')}",
            })
        for sc in self.sidecars:
            wait_until(f"{sc['proc']} /healthz", lambda sc=sc: http_ok(sc["admin"] + "/healthz"), 30,
                       procs=self.procs, watch=[sc["proc"]])

    def start_model_server(self) -> None:
        pod = self.model_pods[0]
        uri = f"models:/{self.model_name}@{self.alias}"
        (self.work / "home").mkdir(exist_ok=True)
        (self.work / "tmp").mkdir(exist_ok=True)
        self.model_proc = self.start_container(pod, "model-server", [str(self.venv / "bin" / "mlflow")], env_overrides={
            "MLFLOW_TRACKING_URI": self.server_url,
            "HOME": str(self.work / "home"),
            "TMPDIR": str(self.work / "tmp"),
            "MLKUBE_MODEL_URI": uri,
            "MLKUBE_MODEL_PORT": str(self.model_port),
            "MLKUBE_MODEL_VERSION": self.model["version"],
        }, flag_overrides={"--model-uri": uri, "--port": str(self.model_port)})

    def start_node_sampler(self) -> None:
        pods = [p for p in self.cluster.pods if p.labels.get("app.kubernetes.io/component") == "node-sampler"]
        if not pods:
            raise Fatal("no node-sampler DaemonSet among the rendered objects")
        pod = pods[0]
        port = pod.port("mlkube-node-sampler", "metrics")
        self.sampler_proc = self.start_container(pod, "mlkube-node-sampler", [self.binary("mlkube-node-sampler")],
                                                 flag_overrides={
                                                     "--listen": f"127.0.0.1:{port}",
                                                     "--interval": "1",
                                                     "--node-name": NODE_NAME,
                                                     "--tracking-uri-default": self.server_url,
                                                 })
        wait_until("the node sampler's /metrics", lambda: http_ok(f"http://127.0.0.1:{port}/metrics"), 30,
                   procs=self.procs, watch=[self.sampler_proc])

    # ---- 4: Prometheus
    def start_prometheus(self) -> None:
        jobs, described = self.cluster.scrape_configs()
        # kube-state-metrics, as kube-prometheus-stack scrapes it (honorLabels: the pod's own labels).
        ksm_port = free_port()
        self.ksm = KubeStateMetrics(ksm_port, self.cluster.pods)
        jobs.append({"job_name": "kube-state-metrics", "honor_labels": True, "scrape_interval": SCRAPE_INTERVAL,
                     "scrape_timeout": SCRAPE_INTERVAL,
                     "static_configs": [{"targets": [f"127.0.0.1:{ksm_port}"], "labels": {"job": "kube-state-metrics"}}]})
        described.append({"job": "kube-state-metrics", "pod": "(emulated)", "container": "",
                          "address": f"127.0.0.1:{ksm_port}"})
        self.expected_targets = described
        self.rule_alerts = rewrite_rules(self.work / "rules")
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                       "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(self.work / "rules" / "*.yaml")],
            "scrape_configs": jobs,
        }
        cfg = self.work / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        self.prom_config, self.prom_config_path = config, cfg
        check = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
        self.checks.require("promtool check config (derived scrape config + shortened rules)", check.returncode == 0,
                            (check.stdout + check.stderr).strip()[-800:] if check.returncode else
                            f"{len(jobs)} jobs, {len(described)} targets, {len(self.rule_alerts)} alerts")
        port = free_port()
        self.prom = Prom(f"http://127.0.0.1:{port}")
        self.prom_proc = "prometheus"
        self.procs.start(self.prom_proc, [
            "prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.work / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ])
        wait_until("Prometheus /-/ready", lambda: http_ok(self.prom.url + "/-/ready"), 60,
                   procs=self.procs, watch=[self.prom_proc])
        log(f"Prometheus on {self.prom.url}: {len(jobs)} scrape jobs from "
            f"{len(self.cluster.kind('ServiceMonitor'))} ServiceMonitors, rules {sorted(set(self.rule_alerts))}")

    def targets_up(self) -> list[dict]:
        targets = self.prom.targets()
        if len(targets) == len(self.expected_targets) and all(
                t["health"] == "up" and t.get("lastScrape", "").startswith("2") for t in targets):
            return targets
        return []

    # ---- 5: traffic
    def wait_ready(self) -> None:
        # Before Prometheus starts: pods that are still starting are not what the alerts are about.
        wait_until("the model server and both sidecars ready (/readyz)",
                   lambda: all(http_ok(sc["admin"] + "/readyz") for sc in self.sidecars), 120,
                   procs=self.procs, watch=[self.model_proc] + [sc["proc"] for sc in self.sidecars])
        self.checks.check("sidecars ready once the model server serves", True,
                          ", ".join(sc["pod"] for sc in self.sidecars))

    def active_so_far(self, *names: str) -> list[dict]:
        """Alerts among `names` that were pending or firing at any time since Prometheus started."""
        span = f"{int(time.monotonic() - self.prom_started) + 5}s"
        return [r["metric"] for r in self.prom.query(
            f'max by (alertname, alertstate, pod, model_name, model_version) '
            f'(max_over_time(ALERTS{{alertname=~"{"|".join(names)}"}}[{span}]))')]

    def drive_traffic(self) -> None:
        rows, labels = churn_rows(random.Random(2024), self.args.requests)
        urls = [sc["url"] for sc in self.sidecars]
        log(f"sending {len(rows)} dataframe_split requests round-robin through {len(urls)} sidecars")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda ir: predict(urls[ir[0] % len(urls)], ir[1]), enumerate(rows)))
        ok = [r for r in results if r["status"] == 200]
        bad = [r for r in results if r["status"] != 200]
        ids = [r.get("request_id") for r in ok]
        self.checks.require("every prediction answered 200 with an X-Request-ID", not bad and all(ids)
                            and len(set(ids)) == len(ids),
                            f"{len(ok)} ok, {len(bad)} failed{' e.g. ' + str(bad[0]) if bad else ''}")
        # Ground truth for ~70% of the requests, by the request ids the sidecar returned.
        labelled = [(r, y) for i, (r, y) in enumerate(zip(results, labels)) if i % 10 < 7]
        answers = []
        for i in range(0, len(labelled), 100):
            batch = [{"request_id": r["request_id"], "actual": y} for r, y in labelled[i:i + 100]]
            resp = requests.post(self.server_url + "/api/2.0/mlkube/ground-truth/log-batch",
                                 json={"ground_truth": batch}, timeout=10)
            answers.append(resp)
        bad_gt = [f"{r.status_code} {r.text[:200]}" for r in answers if r.status_code != 200]
        self.checks.require("ground truth posted by X-Request-ID", not bad_gt,
                            f"{len(labelled)} labels in {len(answers)} batches" + (f"; refused: {bad_gt}" if bad_gt else ""))
        expected_acc = sum(1 for r, y in labelled if (r["score"] >= 0.5) == (y == 1)) / len(labelled)
        self.traffic = {"sent": len(results), "ok": len(ok), "labelled": len(labelled), "accuracy": expected_acc,
                        "p50_ms": sorted(r["latency"] for r in ok)[len(ok) // 2] * 1000}
        log(f"traffic: {len(ok)} ok, ground truth for {len(labelled)}, expected accuracy {expected_acc:.4f}")

    # ---- 6: assertions through Prometheus
    def assert_targets(self, when: str) -> None:
        targets = self.prom.targets()
        self.summary["targets"] = targets
        down = [f"{t['labels'].get('job')}/{t['labels'].get('pod')} {t['health']} {t.get('lastError', '')}"
                for t in targets if t["health"] != "up"]
        self.checks.check(f"{when}: all {len(self.expected_targets)} targets healthy in /api/v1/targets",
                          len(targets) == len(self.expected_targets) and not down,
                          f"{len(targets)} active, down: {down}" if down or len(targets) != len(self.expected_targets)
                          else "")
        up = self.prom.query("up")
        not_up = [r["metric"] for r in up if r["value"][1] != "1"]
        ok = len(up) == len(self.expected_targets) and not not_up
        self.checks.check(f"{when}: up == 1 for every target", ok,
                          f"{len(up)} series" + ("" if ok else f", not 1: {not_up}"))

    def assert_metrics(self) -> None:
        self.assert_targets("after traffic")
        v = self.model["version"]
        labels = f'model_name="{self.model_name}", model_version="{v}"'
        series = self.prom.query(f"mlflow_predictions_total{{{labels}}}")
        per_pod = {r["metric"].get("pod"): float(r["value"][1]) for r in series}
        self.checks.check("serving metrics carry model_name and model_version (both replicas)",
                          len(per_pod) == len(self.sidecars) and sum(per_pod.values()) >= self.traffic["ok"],
                          f"mlflow_predictions_total{{{labels}}} by pod: {per_pod}")
        unlabelled = self.prom.query(
            'count by (__name__) ({__name__=~"mlflow_(inference|prediction|model_info).*", model_version=""}) or '
            'count by (__name__) ({__name__=~"mlflow_(inference|prediction|model_info).*", model_name=""})')
        self.checks.check("no serving series without model_name/model_version", not unlabelled,
                          str([r["metric"] for r in unlabelled]) if unlabelled else "")
        info = self.prom.query(f'mlflow_model_info{{{labels}, run_id="{self.model["run_id"]}"}}')
        self.checks.check("mlflow_model_info carries the run id", len(info) == len(self.sidecars), f"{len(info)} series")
        # Quality: wait for an evaluation that saw every captured prediction and every label.
        q = f'model_name="{self.model_name}", model_version="{v}", window="1h"'

        def quality_complete():
            at = time.time()
            preds = self.prom.value(f"mlflow_model_quality_predictions{{{q}}}", at)
            lab = self.prom.value(f"mlflow_model_quality_labelled{{{q}}}", at)
            acc = self.prom.value(f'mlflow_model_quality{{{q}, metric="accuracy"}}', at)
            if preds is not None and preds >= self.traffic["ok"] and lab is not None \
                    and lab >= self.traffic["labelled"] and acc is not None:
                return preds, lab, acc
            return None

        preds, lab, acc = wait_until(
            f"mlflow_model_quality for {self.model_name} v{v} over all {self.traffic['ok']} captured predictions",
            quality_complete, 60, interval=1)
        metrics = {r["metric"].get("metric"): float(r["value"][1]) for r in self.prom.query(f"mlflow_model_quality{{{q}}}")}
        self.quality = metrics
        self.checks.check("mlflow_model_quality appears for the version", "accuracy" in metrics,
                          f"{len(metrics)} metrics: " + ", ".join(f"{k}={val:.3f}" for k, val in sorted(metrics.items())))
        self.checks.check("captured predictions and ground truth joined (counts)",
                          preds == self.traffic["ok"] and lab == self.traffic["labelled"],
                          f"predictions {preds:.0f} (sent {self.traffic['ok']}), labelled {lab:.0f} "
                          f"(posted {self.traffic['labelled']})")
        self.checks.check("accuracy in Prometheus equals the client's own count",
                          abs(acc - self.traffic["accuracy"]) < 1e-9, f"{acc} vs {self.traffic['accuracy']}")
        # Node series.
        node = self.prom.query("mlflow_system_cpu_utilization_percentage") + \
            self.prom.query("mlflow_system_memory_usage_megabytes")
        self.checks.check("node sampler series present with a node label",
                          len(node) >= 2 and all(r["metric"].get("node") for r in node),
                          ", ".join(f"{r['metric'].get('__name__')}{{node={r['metric'].get('node')}}}" for r in node))
        self.gpus = len(self.prom.query("mlflow_system_gpu_utilization_percentage"))

    def assert_dashboards(self) -> None:
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "check-dashboards.py"), "--list-queries"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            self.checks.check("scripts/check-dashboards.py --list-queries", False, (out.stdout + out.stderr)[-800:])
            return
        queries = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if not queries:
            raise Fatal("scripts/check-dashboards.py --list-queries listed no queries")
        per_dash: dict[str, dict] = {}
        empty = []
        at = time.time()
        for q in queries:
            d = per_dash.setdefault(q["dashboard"], {"queries": 0, "with_data": 0, "series": 0, "gpu_empty": 0,
                                                     "operator_empty": 0})
            d["queries"] += 1
            try:
                n = len(self.prom.query(q["expr"], at))
            except Fatal as exc:
                empty.append(f"{q['dashboard']} / {q['panel']}: query error {exc}")
                continue
            d["series"] += n
            if n:
                d["with_data"] += 1
            elif "gpu" in q.get("needs", []) and (self.gpus == 0 or "pod" in q["expr"]):
                # No GPU here (or no Kubernetes pods to attribute GPU memory to): expected empty.
                d["gpu_empty"] += 1
            elif "operator" in q.get("needs", []):
                # No Kubernetes API here, so no mlkube-operator runs: its series are expected empty.
                d["operator_empty"] += 1
            else:
                empty.append(f"{q['dashboard']} / {q['panel']}: {q['expr']}")
        self.summary["dashboards"] = per_dash
        total = sum(d["queries"] for d in per_dash.values())
        gpu_empty = sum(d["gpu_empty"] for d in per_dash.values())
        operator_empty = sum(d["operator_empty"] for d in per_dash.values())
        self.checks.check(f"every non-GPU panel query of {len(per_dash)} dashboards returns data", not empty,
                          f"{total} queries, {gpu_empty} GPU queries expected empty (GPUs seen: {self.gpus}), "
                          f"{operator_empty} on mlkube-operator series expected empty (no operator here)"
                          + ("; EMPTY: " + "; ".join(empty) if empty else ""))

    # ---- 7: break it
    def alert_firing(self, name: str) -> list[dict]:
        return self.prom.alert(name, "firing", model_name=self.model_name, model_version=self.model["version"])

    def note_alert(self, name: str, what: str) -> None:
        self.summary["alerts"].setdefault(name, []).append(f"{what} at +{time.monotonic() - T0:.0f}s")

    def break_and_restore(self) -> None:
        readyz = lambda sc: requests.get(sc["admin"] + "/readyz", timeout=2).status_code  # noqa: E731
        early = self.active_so_far("MlkubeModelErrorRateHigh", "MlkubeSidecarNotReady")
        self.checks.check("no error-rate or not-ready alert before the failure", not early, str(early) if early else "")
        traffic = TrafficLoop([sc["url"] for sc in self.sidecars], threads=2, pause=0.1)
        try:
            time.sleep(2)
            log("breaking it: stopping the model server (mlflow models serve)")
            t_break = time.monotonic()
            self.procs.stop(self.model_proc)
            wait_until("both sidecars' /readyz to turn 503", lambda: all(readyz(sc) == 503 for sc in self.sidecars), 20)
            self.checks.check("sidecar /readyz false while the model server is down", True,
                              f"after {time.monotonic() - t_break:.1f}s")
            fired = wait_until("MlkubeModelErrorRateHigh firing", lambda: self.alert_firing("MlkubeModelErrorRateHigh"),
                               90, interval=1)
            self.note_alert("MlkubeModelErrorRateHigh", "firing")
            self.checks.check("error-rate alert fires (Prometheus /api/v1/alerts)", True,
                              f"after {time.monotonic() - t_break:.0f}s, value {float(fired[0]['value']):.2f}")
            not_ready = wait_until(
                "MlkubeSidecarNotReady firing for both replicas",
                lambda: (lambda a: a if {x["labels"].get("pod") for x in a} >= {sc["pod"] for sc in self.sidecars}
                         else None)(self.prom.alert("MlkubeSidecarNotReady", "firing")), 60, interval=1)
            self.note_alert("MlkubeSidecarNotReady", "firing")
            self.checks.check("sidecar-not-ready alert fires (readinessProbe -> kube_pod_container_status_ready)", True,
                              f"after {time.monotonic() - t_break:.0f}s for "
                              + ", ".join(sorted(x["labels"]["pod"] for x in not_ready)))
            errs = self.prom.query(f'sum by (reason) (increase(mlflow_prediction_errors_total'
                                   f'{{model_name="{self.model_name}"}}[1m])) > 0')
            reasons = {r["metric"].get("reason"): round(float(r["value"][1])) for r in errs}
            self.checks.check("errors counted with reason upstream_5xx/upstream_unavailable",
                              bool(set(reasons) & {"upstream_unavailable", "upstream_5xx"}), str(reasons))

            log("restoring it: starting the model server again")
            t_restore = time.monotonic()
            self.start_model_server()
            wait_until("both sidecars ready again", lambda: all(readyz(sc) == 200 for sc in self.sidecars), 120,
                       procs=self.procs, watch=[self.model_proc])
            self.checks.check("sidecar /readyz true again after the restore", True,
                              f"after {time.monotonic() - t_restore:.0f}s")
            n_before = len(traffic.results)
            wait_until("MlkubeSidecarNotReady to resolve", lambda: not self.prom.alert("MlkubeSidecarNotReady"), 60,
                       interval=1)
            self.note_alert("MlkubeSidecarNotReady", "resolved")
            self.checks.check("sidecar-not-ready alert resolves after the restore", True,
                              f"after {time.monotonic() - t_restore:.0f}s")
            wait_until("MlkubeModelErrorRateHigh to resolve",
                       lambda: not self.prom.alert("MlkubeModelErrorRateHigh"), 120, interval=1)
            self.note_alert("MlkubeModelErrorRateHigh", "resolved")
            after = traffic.results[n_before:]
            self.checks.check("error-rate alert resolves after recovery, traffic succeeds again",
                              bool(after) and all(r["status"] == 200 for r in after[-20:]),
                              f"after {time.monotonic() - t_restore:.0f}s; {sum(r['status'] == 200 for r in after)}"
                              f"/{len(after)} ok since")
        finally:
            results = traffic.stop()
        self.summary["break_traffic"] = (sum(r["status"] == 200 for r in results), len(results))

    def slow_down(self) -> None:
        early = self.active_so_far("MlkubeModelLatencyP99High")
        self.checks.check("no latency alert before the slowdown", not early, str(early) if early else "")
        slow = self.sidecars[1]
        log(f"making {slow['pod']}'s model server slow ({SLOW_DELAY_S}s per prediction)")
        self.slow.delay = SLOW_DELAY_S
        t = time.monotonic()
        traffic = TrafficLoop([slow["url"]], threads=4, pause=0)
        try:
            fired = wait_until("MlkubeModelLatencyP99High firing",
                               lambda: self.alert_firing("MlkubeModelLatencyP99High"), 120, interval=1)
            self.note_alert("MlkubeModelLatencyP99High", "firing")
            self.checks.check("latency alert fires (Prometheus /api/v1/alerts)", True,
                              f"after {time.monotonic() - t:.0f}s, p99 {float(fired[0]['value']):.2f}s")
        finally:
            self.slow.delay = 0
            results = traffic.stop()
        self.checks.check("slow requests still answered 200", all(r["status"] == 200 for r in results),
                          f"{sum(r['status'] == 200 for r in results)}/{len(results)}")

    def assert_in_flight_per_pod(self) -> None:
        """What an autoscaler on in-flight requests would read: hold HELD_REQUESTS requests on the slow
        replica, none on the other, and query the per-pod series, the adapter rule and KEDA's query."""
        slow, idle = self.sidecars[1], self.sidecars[0]
        namespace = self.model_pods[0].namespace
        pods = [sc["pod"] for sc in self.sidecars]
        rule = yaml.safe_load(ADAPTER_RULES.read_text())["rules"][0]
        series = self.prom.query(rule["seriesQuery"])
        self.checks.check("adapter rule: its seriesQuery finds one in-flight series per pod",
                          sorted(r["metric"].get("pod", "") for r in series) == sorted(pods),
                          str([r["metric"] for r in series]))
        # The adapter's templating for a pods list in a namespace (pods/*): the resource overrides
        # become label matchers, the group-by is the pod label.
        matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
        query = (rule["metricsQuery"].replace("<<.Series>>", rule["name"]["as"])
                 .replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod"))
        keda = f'sum({IN_FLIGHT}{{namespace="{namespace}",service="{self.md_name}"}})'
        log(f"holding {HELD_REQUESTS} requests for {HELD_DELAY_S}s on {slow['pod']}; adapter query: {query}")
        self.slow.delay = HELD_DELAY_S
        held: list[dict] = []
        threads = [threading.Thread(target=lambda: held.append(predict(slow["url"], churn_rows(random.Random(i), 1)[0][0])),
                                    daemon=True) for i in range(HELD_REQUESTS)]
        for t in threads:
            t.start()
        want = {slow["pod"]: float(HELD_REQUESTS), idle["pod"]: 0.0}
        per_pod: dict[str, float] = {}

        def adapter_sees_them():
            nonlocal per_pod
            per_pod = {r["metric"].get("pod", ""): float(r["value"][1]) for r in self.prom.query(query)}
            return per_pod == want

        try:
            got = wait_until(f"{IN_FLIGHT} = {HELD_REQUESTS} on {slow['pod']} through the adapter rule",
                             adapter_sees_them, HELD_DELAY_S - 1, interval=0.25)
            at = time.time()
            direct = {r["metric"].get("pod", ""): float(r["value"][1])
                      for r in self.prom.query(f'{IN_FLIGHT}{{namespace="{namespace}"}}', at)}
            keda_value = self.prom.value(keda, at)
        except Fatal:
            got, direct, keda_value = False, {}, None
        finally:
            for t in threads:
                t.join(HELD_DELAY_S + 10)
            self.slow.delay = 0
        self.checks.check(f"{IN_FLIGHT} has a series per pod under load ({', '.join(pods)})",
                          set(direct) == set(pods), str(direct))
        self.checks.check(f"adapter rule's metricsQuery returns {HELD_REQUESTS} for {slow['pod']} and 0 for {idle['pod']}",
                          bool(got), f"{per_pod}, want {want}")
        self.checks.check(f"KEDA's default query sums the held requests ({HELD_REQUESTS})",
                          keda_value == float(HELD_REQUESTS), f"{keda} = {keda_value}")
        self.checks.check("held requests answered 200", len(held) == HELD_REQUESTS and all(r["status"] == 200 for r in held),
                          str([r["status"] for r in held]))
        self.summary["in_flight"] = {"adapter": per_pod, "keda": keda_value}

    # ---- 9: canary rollout
    def canary_rollout(self) -> None:
        """The rendered canary example on the real stack: a stable pod (v3) and two canary pods of the
        canary Deployment (v4, and v5 as a second candidate) behind their sidecars in front of the real
        model server, scraped by the real Prometheus. Ground truth makes v4 worse than v3 and v5 as good;
        canary-analysis, reading the real Prometheus and the real quality API, must roll v4 back and
        advance/promote v5, while the stable pod keeps answering."""
        cc = Cluster([(CANARY_RENDERED, lambda o: True)])
        stable_w = [w for w in cc.kind("Deployment") if w["spec"]["template"]["metadata"]["labels"].get(
            "mlkube.io/track") == "stable"]
        canary_w = [w for w in cc.kind("Deployment") if w["spec"]["template"]["metadata"]["labels"].get(
            "mlkube.io/track") == "canary"]
        if len(stable_w) != 1 or len(canary_w) != 1:
            raise Fatal(f"{CANARY_RENDERED}: expected one stable and one canary Deployment")
        # One stable pod and two canary pods (the second one stands for a good candidate).
        cc = Cluster([(CANARY_RENDERED, lambda o: True)],
                     replicas={stable_w[0]["metadata"]["name"]: 1, canary_w[0]["metadata"]["name"]: 2})
        model = stable_w[0]["metadata"]["labels"]["mlkube.io/model-name"]
        namespace = stable_w[0]["metadata"]["namespace"]
        stable_v = stable_w[0]["metadata"]["labels"]["mlkube.io/model-version"]
        bad_v = canary_w[0]["metadata"]["labels"]["mlkube.io/model-version"]
        good_v = str(int(bad_v) + 1)
        # Register versions 1..good_v of `model`, all the churn run's model (the registry is real; the
        # versions differ only in what the ground truth says about their answers).
        src = requests.get(self.server_url + "/api/2.0/mlflow/model-versions/get",
                           params={"name": self.model_name, "version": self.model["version"]}, timeout=10)
        src.raise_for_status()
        source = src.json()["model_version"]["source"]
        requests.post(self.server_url + "/api/2.0/mlflow/registered-models/create", json={"name": model},
                      timeout=10).raise_for_status()
        versions = []
        for _ in range(int(good_v)):
            r = requests.post(self.server_url + "/api/2.0/mlflow/model-versions/create", json={
                "name": model, "source": source, "run_id": self.model["run_id"]}, timeout=10)
            r.raise_for_status()
            versions.append(str(r.json()["model_version"]["version"]))
        self.checks.require(f"canary: {model} v{stable_v} (stable), v{bad_v} and v{good_v} (canaries) registered",
                            {stable_v, bad_v, good_v} <= set(versions), f"versions {versions}")
        pods = {stable_v: cc.pods_of(stable_w[0]["metadata"]["name"])[0]}
        canary_pods = cc.pods_of(canary_w[0]["metadata"]["name"])
        pods[bad_v], pods[good_v] = canary_pods[0], canary_pods[1]
        sidecars = {}
        for version, pod in pods.items():
            proc = self.start_container(pod, "mlkube-sidecar", [self.binary("mlkube-sidecar")], flag_overrides={
                "--listen": f"127.0.0.1:{pod.port('mlkube-sidecar', 'http')}",
                "--metrics-listen": f"127.0.0.1:{pod.port('mlkube-sidecar', 'metrics')}",
                "--upstream": f"http://127.0.0.1:{self.model_port}",
                "--model-name": model,
                "--model-version": version,
                "--run-id": self.model["run_id"],
                "--tracking-uri": self.server_url,
                "--capture-sample-rate": "1",
                "--upstream-health-interval": "0.5",
                "--capture-flush-interval": "1",
                "--request-timeout": "10",
            })
            sidecars[version] = {"pod": pod.name, "proc": proc,
                                 "url": f"http://127.0.0.1:{pod.port('mlkube-sidecar', 'http')}",
                                 "admin": f"http://127.0.0.1:{pod.port('mlkube-sidecar', 'metrics')}"}
        wait_until("the stable and canary sidecars ready (/readyz)",
                   lambda: all(http_ok(sc["admin"] + "/readyz") for sc in sidecars.values()), 60,
                   procs=self.procs, watch=[sc["proc"] for sc in sidecars.values()])
        # Prometheus scrapes them from the rendered ServiceMonitor (config reloaded, as Prometheus
        # Operator does when a ServiceMonitor appears).
        jobs, described = cc.scrape_configs()
        self.prom_config["scrape_configs"] += jobs
        self.prom_config_path.write_text(yaml.safe_dump(self.prom_config, sort_keys=False))
        reload = requests.post(self.prom.url + "/-/reload", timeout=30)
        self.expected_targets = self.expected_targets + described
        self.checks.require(f"canary: Prometheus reloaded with {len(described)} targets of the rendered "
                            f"ServiceMonitor of {model}", reload.status_code == 200,
                            f"{reload.status_code} {reload.text[:200]}")
        wait_until(f"all {len(self.expected_targets)} targets up in Prometheus (with {model}'s)",
                   self.targets_up, 60, interval=1)

        # Traffic to every version, then ground truth: right for stable, inverted for the bad canary's
        # request ids, agreeing with the good canary's answers.
        order = [stable_v, stable_v, bad_v, good_v]
        rows, labels = churn_rows(random.Random(16), CANARY_REQUESTS)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda ir: dict(predict(sidecars[order[ir[0] % 4]]["url"], ir[1]),
                                                    version=order[ir[0] % 4]), enumerate(rows)))
        bad = [r for r in results if r["status"] != 200 or not r.get("request_id")]
        sent = {v: sum(1 for r in results if r["version"] == v) for v in pods}
        self.checks.require("canary: stable and canary sidecars answered every prediction 200 with an X-Request-ID",
                            not bad, f"{sent} per version" + (f"; failed e.g. {bad[0]}" if bad else ""))
        # The good canary's labels agree with its own answers: every fourth row is a different
        # sample from the stable pods' half, and with the true labels its accuracy would differ
        # from theirs by sampling alone (by more than maxDrop in some runs).
        def label(r: dict, y: int) -> int:
            if r["version"] == bad_v:
                return 1 - y
            if r["version"] == good_v:
                return 1 if r["score"] >= 0.5 else 0
            return y

        truth = [(r, label(r, y)) for r, y in zip(results, labels)]
        for i in range(0, len(truth), 100):
            resp = requests.post(self.server_url + "/api/2.0/mlkube/ground-truth/log-batch", json={
                "ground_truth": [{"request_id": r["request_id"], "actual": y} for r, y in truth[i:i + 100]]},
                timeout=10)
            if resp.status_code != 200:
                raise Fatal(f"ground truth refused: {resp.status_code} {resp.text[:300]}")
        client_acc = {v: sum(1 for r, y in truth if r["version"] == v and (r["score"] >= 0.5) == (y == 1)) / sent[v]
                      for v in pods}

        def quality(version: str) -> dict:
            r = requests.get(self.server_url + "/api/2.0/mlkube/quality/get", params={
                "model_name": model, "model_version": version, "window": "1h", "score_field": SCORE_FIELD},
                timeout=10)
            r.raise_for_status()
            return r.json()["quality"]

        def all_labelled():
            got = {v: quality(v) for v in pods}
            return got if all(got[v].get("evaluated", 0) >= sent[v] for v in pods) else None

        api = wait_until("the quality API joined every canary-phase prediction with its label", all_labelled, 60,
                         interval=1)
        api_acc = {v: api[v]["metrics"].get("accuracy") for v in pods}
        self.checks.check("canary: quality API accuracy per version equals the client's own count",
                          all(api_acc[v] is not None and abs(api_acc[v] - client_acc[v]) < 1e-9 for v in pods),
                          ", ".join(f"v{v} {api_acc[v]} (client {client_acc[v]:.4f}, n={sent[v]})" for v in pods))

        def scraped():
            got = {v: self.prom.value(f'sum(mlflow_predictions_total{{namespace="{namespace}", '
                                      f'model_name="{model}", model_version="{v}"}})') for v in pods}
            return got if all(got[v] is not None and got[v] >= sent[v] for v in pods) else None

        counts = wait_until(f"Prometheus scraped every {model} prediction", scraped, 30, interval=1)
        log(f"canary: Prometheus counts {counts}; waiting labelDelay ({CANARY_LABEL_DELAY_S}s)")
        time.sleep(CANARY_LABEL_DELAY_S + 1)

        # The example's ModelDeployment with test-time sizes: at least 50 requests and 50 labels, one
        # failed analysis rolls back, labels due after 3s. The latency gate is loose here: every version
        # shares one scoring process on a shared machine, and it is not what this scenario judges.
        md = yaml.safe_load(CANARY_EXAMPLE.read_text())
        md["metadata"]["namespace"] = namespace
        analysis = md["spec"]["rollout"]["canary"]["analysis"]
        analysis.update({"failureLimit": 1, "minRequests": 50, "maxLatencyP99Ratio": 5})
        analysis["quality"].update({"labelDelay": f"{CANARY_LABEL_DELAY_S}s", "minLabelled": 50,
                                    "scoreField": SCORE_FIELD})
        md_path = self.work / "canary-modeldeployment.yaml"
        md_path.write_text(yaml.safe_dump(md, sort_keys=False))

        def analyse(canary: str, step: int = 0, age: int = 3600) -> dict:
            cmd = [self.binary("canary-analysis"), "--model-deployment", str(md_path),
                   "--prometheus-url", self.prom.url, "--tracking-uri", self.server_url,
                   "--stable", stable_v, "--canary", canary, "--step", str(step), "--canary-age", str(age)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self.base_env())
            if out.returncode != 0:
                raise Fatal(f"{shlex.join(cmd)} exited {out.returncode}: {out.stderr[-800:]}")
            return json.loads(out.stdout)

        def numbers(d: dict) -> str:
            m = d["verdict"]["measurements"]
            fmt = lambda k: "-" if m.get(k) is None else f"{m[k]:.4g}"  # noqa: E731
            return (f"{d['step']} ({d['verdict']['result']}): requests {fmt('canaryRequests')}, error rate "
                    f"{fmt('canaryErrorRate')}, p99 {fmt('canaryLatencyP99')}s vs {fmt('stableLatencyP99')}s, "
                    f"accuracy {fmt('canaryQuality')} vs stable {fmt('stableQuality')} "
                    f"({m.get('canaryLabelled')}/{m.get('stableLabelled')} labelled)")

        # The stable pod keeps serving while the canaries are judged.
        keep = TrafficLoop([sidecars[stable_v]["url"]], threads=1, pause=0.05, seed=17)
        try:
            early = analyse(bad_v, age=1)
            rolled = analyse(bad_v)
            advanced = analyse(good_v)
            promoted = analyse(good_v, step=1)
        finally:
            served = keep.stop()
        self.summary["canary"] = {"bad": rolled, "good": advanced, "versions": (stable_v, bad_v, good_v)}
        log(f"canary v{bad_v}: {numbers(rolled)}")
        log(f"canary v{good_v}: {numbers(advanced)}")
        self.checks.check(f"canary: v{bad_v} is not judged on quality before its labels are due (labelDelay): hold",
                          early["step"] == "Hold" and early["transition"] is None
                          and "not due yet" in early["verdict"]["message"],
                          f"{early['step']}: {early['verdict']['message']}")
        m = rolled["verdict"]["measurements"]
        ok = (rolled["step"] == "Rollback" and rolled["transition"] == "CanaryRolledBack"
              and rolled["verdict"]["result"] == "Fail" and rolled["rollout"]["phase"] == "RolledBack"
              and rolled["rollout"].get("failedVersions") == [bad_v])
        self.checks.check(f"canary: worse ground truth for v{bad_v}'s request ids rolls it back (real Prometheus "
                          "and quality API)", ok, f"{numbers(rolled)}; {rolled['verdict']['message']}")
        self.checks.check(f"canary: v{bad_v}'s verdict carries the measured numbers (requests, error rate, "
                          "p99 of both, accuracy of both)",
                          m.get("canaryRequests") is not None and sent[bad_v] * 0.9 <= m["canaryRequests"]
                          <= sent[bad_v] * 1.5 and m.get("canaryErrorRate") == 0
                          and m.get("canaryLatencyP99") is not None and m.get("stableLatencyP99") is not None
                          and abs(m.get("canaryQuality", -1) - client_acc[bad_v]) < 1e-9
                          and abs(m.get("stableQuality", -1) - client_acc[stable_v]) < 1e-9
                          and m.get("canaryLabelled") == sent[bad_v],
                          f"{m}; sent {sent[bad_v]}, client accuracy {client_acc[bad_v]:.4f} vs "
                          f"{client_acc[stable_v]:.4f}")
        self.checks.check(f"canary: healthy serving, worse accuracy: only the quality gate fails for v{bad_v}",
                          "pass: error rate" in rolled["verdict"]["message"]
                          and "FAIL: accuracy" in rolled["verdict"]["message"]
                          and rolled["verdict"]["message"].count("FAIL") == 1, rolled["verdict"]["message"])
        steps = md["spec"]["rollout"]["canary"]["steps"]
        self.checks.check(f"canary: v{good_v} with as good ground truth advances to the next step "
                          f"({steps[1]['weight']}%)",
                          advanced["step"] == "Advance" and advanced["transition"] == "CanaryAdvanced"
                          and advanced["rollout"]["currentWeight"] == steps[1]["weight"]
                          and advanced["verdict"]["result"] == "Pass",
                          f"{numbers(advanced)}; {advanced['verdict']['message']}")
        self.checks.check(f"canary: v{good_v} passing its last step is promoted (not rolled back)",
                          promoted["step"] == "Promote" and promoted["transition"] == "CanaryPromoted"
                          and promoted["rollout"]["stableVersion"] == good_v
                          and not promoted["rollout"].get("failedVersions"),
                          f"{numbers(promoted)}")
        not_ok = [r for r in served if r["status"] != 200]
        self.checks.check(f"canary: the stable pod (v{stable_v}) answered 200 throughout the analyses",
                          served and not not_ok and http_ok(sidecars[stable_v]["admin"] + "/readyz"),
                          f"{len(served)} requests, {len(not_ok)} failed" + (f" e.g. {not_ok[0]}" if not_ok else ""))

    def final_checks(self) -> None:
        self.assert_targets("at the end")
        span = f"{int(time.monotonic() - self.prom_started) + 5}s"
        seen = self.prom.query(f"max by (alertname, alertstate, model_name, model_version, monitor) "
                               f"(max_over_time(ALERTS[{span}]))")
        history: dict[str, set] = {}
        for r in seen:
            history.setdefault(r["metric"]["alertname"], set()).add(r["metric"].get("alertstate"))
        self.summary["alert_states"] = history
        down = [r for r in seen if r["metric"]["alertname"] == "MlkubeTargetDown"]
        self.checks.check("MlkubeTargetDown never fired or pended during the run", not down,
                          str([r["metric"] for r in down]) if down else "")
        # Quality alerts follow the monitor: accuracy below 0.9 must have fired both.
        acc = self.quality.get("accuracy", 1.0)
        firing = {r["metric"]["alertname"] for r in seen if r["metric"].get("alertstate") == "firing"}
        if acc < 0.9:
            want = {"MlkubeModelQualityBelowThreshold", "MlkubeModelQualityThresholdBreached"}
            if self.checks.check("quality alerts fire for accuracy below the example's 0.9", want <= firing,
                                 f"accuracy {acc:.3f}; firing: {sorted(firing & want)}"):
                for name in want:
                    self.summary["alerts"].setdefault(name, []).append(f"fired (accuracy {acc:.3f} < 0.9)")
        else:
            self.checks.check("no quality alert with accuracy above 0.9",
                              "MlkubeModelQualityBelowThreshold" not in firing, f"accuracy {acc:.3f}")

    # ---- summary
    def print_summary(self, ok: bool, error: str | None) -> None:
        out = []
        w = out.append
        w("")
        w("==== e2e summary ====")
        targets = self.summary.get("targets") or []
        if targets:
            w(f"{'target (job / pod)':<58} {'container':<20} {'address':<16} health")
            for t in sorted(targets, key=lambda t: (t["labels"].get("job", ""), t["labels"].get("pod", ""))):
                lb = t["labels"]
                who = f"{lb.get('job', '')} / {lb['pod']}" if lb.get("pod") else f"{lb.get('job', '')} (emulated)"
                w(f"{who:<58} {lb.get('container', ''):<20} "
                  f"{lb.get('instance', ''):<16} {t['health']}")
            w("")
        dashes = self.summary.get("dashboards") or {}
        if dashes:
            w(f"{'dashboard':<30} {'queries':>7} {'w/ data':>8} {'series':>7}  note")
            for name, d in sorted(dashes.items()):
                notes = [f"{d['gpu_empty']} GPU queries empty: no GPU on this machine"] if d["gpu_empty"] else []
                if d["operator_empty"]:
                    notes.append(f"{d['operator_empty']} operator queries empty: no operator here")
                note = "; ".join(notes) + (" (expected)" if notes else "")
                w(f"{name:<30} {d['queries']:>7} {d['with_data']:>8} {d['series']:>7}  {note}")
            w("")
        asserted = self.summary.get("alerts") or {}
        states = self.summary.get("alert_states") or {}
        if asserted or states:
            w(f"{'alert':<38} {'states in Prometheus':<22} asserted by the test")
            for name in sorted(set(asserted) | set(states)):
                st = "/".join(x for x in ("pending", "firing") if x in states.get(name, ()))
                w(f"{name:<38} {st or '-':<22} {', '.join(asserted.get(name, [])) or '-'}")
            quiet = sorted(set(getattr(self, "rule_alerts", [])) - set(states) - set(asserted))
            if quiet:
                w(f"never active: {', '.join(quiet)}")
            w("")
        if getattr(self, "traffic", None):
            t = self.traffic
            w(f"traffic: {t['sent']} predictions ({t['ok']} ok, p50 {t['p50_ms']:.0f} ms), ground truth for "
              f"{t['labelled']}, accuracy {t['accuracy']:.3f}"
              + (f"; break/restore phase {self.summary['break_traffic'][0]}/{self.summary['break_traffic'][1]} ok"
                 if "break_traffic" in self.summary else ""))
        if self.summary.get("canary"):
            c = self.summary["canary"]
            stable_v, bad_v, good_v = c["versions"]
            for v, d in ((bad_v, c["bad"]), (good_v, c["good"])):
                m = d["verdict"]["measurements"]
                fmt = lambda k, m=m: "-" if m.get(k) is None else f"{m[k]:.3f}"  # noqa: E731
                w(f"canary v{v} vs stable v{stable_v}: {d['step']} ({d['verdict']['result']}), requests "
                  f"{fmt('canaryRequests')}, error rate {fmt('canaryErrorRate')}, p99 {fmt('canaryLatencyP99')}s vs "
                  f"{fmt('stableLatencyP99')}s, accuracy {fmt('canaryQuality')} vs {fmt('stableQuality')}")
        failed = [(n, d) for n, ok_, d in self.checks.results if not ok_]
        for n, d in failed:
            w(f"FAILED: {n}: {d}")
        if error:
            w(f"FAILED: {error}")
        w(f"e2e: {self.checks.passed} checks passed, {self.checks.failed + (1 if error else 0)} failed "
          f"({time.monotonic() - T0:.0f}s) -> {'OK' if ok else 'FAIL'}")
        print("\n".join(out), flush=True)

    def run(self) -> bool:
        error = None
        try:
            self.cluster = Cluster()
            log(f"cluster from deploy/rendered: {len(self.cluster.pods)} pods "
                f"({', '.join(p.name for p in self.cluster.pods)}), "
                f"{len(self.cluster.kind('ServiceMonitor'))} ServiceMonitors")
            self.start_tracking_server()
            self.train()
            self.start_serving()
            self.start_node_sampler()
            self.wait_ready()
            self.start_prometheus()
            self.prom_started = time.monotonic()
            wait_until(f"all {len(self.expected_targets)} targets up in Prometheus", self.targets_up, 60, interval=1)
            self.drive_traffic()
            time.sleep(3)  # a few scrapes of the traffic for rate()
            self.assert_metrics()
            self.assert_dashboards()
            self.break_and_restore()
            self.slow_down()
            self.assert_in_flight_per_pod()
            self.canary_rollout()
            self.final_checks()
        except Fatal as exc:
            error = str(exc)
            log(f"FATAL: {error}")
        except KeyboardInterrupt:
            error = "interrupted"
        except Exception as exc:  # noqa: BLE001 - a bug in the harness fails the run like any other
            import traceback
            traceback.print_exc()
            error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            failed_procs = [n for n, p in self.procs.procs.items() if p.poll() is not None]
            for n in failed_procs:
                log(f"{n} exited early with {self.procs.procs[n].returncode}; its log:\n{self.procs.tail(n)}")
                self.checks.check(f"{n} still running at the end", False, f"exit {self.procs.procs[n].returncode}")
            if self.slow:
                self.slow.close()
            if self.ksm:
                self.ksm.close()
            self.procs.stop_all()
        ok = error is None and self.checks.failed == 0
        self.print_summary(ok, error)
        return ok


def _interrupt(*_args):
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="scratch directory (logs, databases, Prometheus data)")
    ap.add_argument("--bin-dir", required=True, help="directory with mlkube-server, mlkube-sidecar, mlkube-node-sampler")
    ap.add_argument("--venv", required=True, help="virtualenv with the MLflow client (its bin/ goes on PATH)")
    ap.add_argument("--requests", type=int, default=300, help="predictions in the traffic phase")
    ap.add_argument("--budget", type=float, default=540, help="seconds the whole run may take")
    args = ap.parse_args()
    global DEADLINE
    DEADLINE = Deadline(args.budget)
    signal.signal(signal.SIGTERM, _interrupt)
    return 0 if E2E(args).run() else 1


if __name__ == "__main__":
    sys.exit(main())
