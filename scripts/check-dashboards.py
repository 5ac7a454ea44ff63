#!/usr/bin/env python3
"""Check mlkube's Grafana dashboards and alert rules against the metrics contract.

    python3 scripts/check-dashboards.py                  # dashboards (and rules when PyYAML is there)
    python3 scripts/check-dashboards.py --promtool       # also parse every expression with promtool
    python3 scripts/check-dashboards.py --list-queries   # JSON lines: every panel query, variables
                                                         # substituted, for end-to-end checks

Dashboards (deploy/dashboards/*.json):
  - are what scripts/gen-dashboards.py generates, and the chart's copies are identical;
  - schemaVersion 39, a stable uid (<= 40 characters), the `mlkube` tag;
  - a `datasource` variable of type prometheus, and every panel, target and query variable uses
    `${datasource}`; no `__inputs` and no `${DS_…}` placeholders anywhere;
  - model dashboards have namespace / model_name / model_version variables;
  - unique panel ids, grid positions inside the 24 columns, every panel has a query;
  - every `$variable` an expression uses is defined;
  - every metric an expression (panels and variables) names is in deploy/metrics-contract.txt,
    and every function is a PromQL function.
Rules (deploy/rules/*.yaml, needs PyYAML):
  - every alert has a severity label and summary, description and runbook_url annotations;
  - metric names are in the contract (or `up`, or kube-state-metrics' pod readiness);
  - alert names are unique across files;
  - deploy/rules/tests/ has, for every alert, a case where it fires and one where it must not.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "deploy" / "dashboards"
RULES_DIR = ROOT / "deploy" / "rules"
CONTRACT = ROOT / "deploy" / "metrics-contract.txt"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__dashboard"}
MODEL_DASHBOARD_VARIABLES = {"namespace", "model_name", "model_version"}
# Series alert rules may use besides the contract: the scrape health Prometheus records itself and
# the container readiness kube-state-metrics (part of kube-prometheus-stack) exports.
RULE_ONLY_METRICS = {"up", "kube_pod_container_status_ready"}
SEVERITIES = {"critical", "warning", "info"}

PROMQL_FUNCTIONS = {
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort",
    "sort_desc", "sort_by_label", "sort_by_label_desc", "sqrt", "time", "timestamp", "vector", "year",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "mad_over_time", "acos",
    "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
    # Grafana's variable query functions (templating only)
    "label_values", "label_names", "metrics", "query_result",
}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan", "atan2",
}
MODIFIERS_WITH_LABELS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<var>\$\{[A-Za-z0-9_:.]+\}|\$[A-Za-z_][A-Za-z0-9_]*)
    |(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<ws>\s+)
    |(?P<other>.)
    """,
    re.VERBOSE,
)


class ExprError(Exception):
    pass


def tokens(expr):
    for m in TOKEN.finditer(expr):
        kind = m.lastgroup
        if kind != "ws":
            yield kind, m.group()


def analyse(expr):
    """(metric names, functions, variables) one PromQL expression uses."""
    metrics, functions, variables = set(), set(), set()
    toks = list(tokens(expr))
    depth_brace = depth_bracket = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        if kind == "var":
            variables.add(text.strip("${}"))
        elif text == "{":
            depth_brace += 1
        elif text == "}":
            depth_brace -= 1
        elif text == "[":
            depth_bracket += 1
        elif text == "]":
            depth_bracket -= 1
        elif kind == "ident" and depth_brace == 0 and depth_bracket == 0:
            following = toks[i + 1][1] if i + 1 < len(toks) else ""
            if text in MODIFIERS_WITH_LABELS:
                # skip the label list: `by (a, b)`
                if following == "(":
                    j = i + 2
                    while j < len(toks) and toks[j][1] != ")":
                        j += 1
                    i = j
            elif text in PROMQL_KEYWORDS:
                pass
            elif following == "(" or following in ("by", "without"):
                functions.add(text)
            else:
                metrics.add(text)
        if depth_brace < 0 or depth_bracket < 0:
            raise ExprError(f"unbalanced brackets in {expr!r}")
        i += 1
    if depth_brace or depth_bracket:
        raise ExprError(f"unbalanced brackets in {expr!r}")
    return metrics, functions, variables


def substitute(expr, rate="5m"):
    """The expression as Prometheus would receive it with every variable on "All"."""
    expr = expr.replace("$__rate_interval", rate).replace("${__rate_interval}", rate)
    expr = expr.replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{[A-Za-z0-9_]+\}|\$[A-Za-z_][A-Za-z0-9_]*", ".*", expr)


def load_contract():
    names = set()
    for line in CONTRACT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line):
                raise SystemExit(f"error: {CONTRACT.relative_to(ROOT)}: {line!r} is not a metric name")
            names.add(line)
    return names


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def variable_query(var):
    q = var.get("query")
    if isinstance(q, dict):
        return q.get("query", "")
    return q or ""


def variable_expr(query):
    """The series selector inside `label_values(selector, label)`, as a PromQL expression."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query, re.S)
    if m:
        return f"count({m.group(1)})"
    return query


def check_expression(where, expr, contract, defined, problems, allowed_extra=frozenset()):
    try:
        metrics, functions, variables = analyse(expr)
    except ExprError as err:
        problems.append(f"{where}: {err}")
        return
    for name in sorted(metrics - contract - allowed_extra):
        problems.append(f"{where}: metric {name!r} is not in deploy/metrics-contract.txt")
    for name in sorted(functions - PROMQL_FUNCTIONS):
        problems.append(f"{where}: {name!r} is not a PromQL function")
    if defined is not None:
        for name in sorted(variables - defined - BUILTIN_VARIABLES):
            problems.append(f"{where}: variable ${name} is not defined")


def dashboard_queries(board):
    """(panel title, expr) of every query in a dashboard."""
    for panel in walk_panels(board.get("panels", [])):
        for t in panel.get("targets", []):
            if t.get("expr"):
                yield panel.get("title", ""), t["expr"]


def check_dashboard(path, contract, problems):
    text = path.read_text()
    name = path.relative_to(ROOT)
    try:
        board = json.loads(text)
    except json.JSONDecodeError as err:
        problems.append(f"{name}: not JSON: {err}")
        return None
    if "__inputs" in board or "${DS_" in text or "DS_PROMETHEUS" in text:
        problems.append(f"{name}: uses __inputs / ${{DS_…}} placeholders; use the ${{datasource}} variable")
    if board.get("schemaVersion") != 39:
        problems.append(f"{name}: schemaVersion is {board.get('schemaVersion')}, want 39")
    uid = board.get("uid", "")
    if not uid or len(uid) > 40 or not re.fullmatch(r"[a-zA-Z0-9_-]+", uid):
        problems.append(f"{name}: uid {uid!r} must be 1-40 characters of [a-zA-Z0-9_-]")
    if path.stem != uid:
        problems.append(f"{name}: file name should be the uid ({uid}.json)")
    if not board.get("title"):
        problems.append(f"{name}: no title")
    if "mlkube" not in board.get("tags", []):
        problems.append(f"{name}: missing the `mlkube` tag")

    variables = board.get("templating", {}).get("list", [])
    defined = {v.get("name") for v in variables}
    ds = [v for v in variables if v.get("name") == "datasource"]
    if not ds or ds[0].get("type") != "datasource" or ds[0].get("query") != "prometheus":
        problems.append(f"{name}: needs a `datasource` variable of type datasource with query prometheus")
    elif variables[0].get("name") != "datasource":
        problems.append(f"{name}: the datasource variable must come first")
    if any(tag in board.get("tags", []) for tag in ("serving", "quality")):
        for missing in sorted(MODEL_DASHBOARD_VARIABLES - defined):
            problems.append(f"{name}: model dashboard without the ${missing} variable")
    for var in variables:
        if var.get("type") == "query":
            where = f"{name}: variable ${var.get('name')}"
            if var.get("datasource") != DATASOURCE:
                problems.append(f"{where}: datasource must be {DATASOURCE}")
            query = variable_query(var)
            if not query:
                problems.append(f"{where}: empty query")
            check_expression(where, variable_expr(query), contract, defined, problems)

    ids = set()
    for panel in walk_panels(board.get("panels", [])):
        title = panel.get("title", "?")
        where = f"{name}: panel {title!r}"
        pid = panel.get("id")
        if pid in ids:
            problems.append(f"{where}: duplicate panel id {pid}")
        ids.add(pid)
        pos = panel.get("gridPos", {})
        if not pos or pos.get("x", 0) + pos.get("w", 0) > 24 or pos.get("w", 0) <= 0 or pos.get("h", 0) <= 0:
            problems.append(f"{where}: gridPos {pos} is outside the 24-column grid")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{where}: datasource must be {DATASOURCE}")
        tgts = panel.get("targets", [])
        if not tgts:
            problems.append(f"{where}: no queries")
        refs = [t.get("refId") for t in tgts]
        if len(set(refs)) != len(refs):
            problems.append(f"{where}: duplicate refIds {refs}")
        for t in tgts:
            if t.get("datasource") != DATASOURCE:
                problems.append(f"{where} {t.get('refId')}: datasource must be {DATASOURCE}")
            if not t.get("expr"):
                problems.append(f"{where} {t.get('refId')}: empty expression")
                continue
            check_expression(f"{where} {t.get('refId')}", t["expr"], contract, defined, problems)
        repeat = panel.get("repeat")
        if repeat and repeat not in defined:
            problems.append(f"{where}: repeats over undefined variable ${repeat}")
    return board


def load_yaml(path):
    import yaml  # noqa: PLC0415 (only the rules checks need PyYAML)

    with open(path) as f:
        return yaml.safe_load(f)


def rule_files():
    return sorted(p for p in RULES_DIR.glob("*.yaml"))


def check_rules(contract, problems):
    alerts = {}  # name -> file
    exprs = []
    for path in rule_files():
        name = path.relative_to(ROOT)
        doc = load_yaml(path) or {}
        file_alerts = set()
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" not in rule:
                    continue
                alert = rule["alert"]
                where = f"{name}: {alert}"
                # One alert name may carry several rules in one file (the operator's per-metric
                # quality alerts), never across files.
                if alert in alerts and alerts[alert] != name:
                    problems.append(f"{where}: alert name also used in {alerts[alert]}")
                alerts[alert] = name
                file_alerts.add(alert)
                labels = rule.get("labels", {}) or {}
                annotations = rule.get("annotations", {}) or {}
                if labels.get("severity") not in SEVERITIES:
                    problems.append(f"{where}: severity label must be one of {sorted(SEVERITIES)}")
                for key in ("summary", "description", "runbook_url"):
                    if not annotations.get(key):
                        problems.append(f"{where}: missing annotation {key}")
                if not str(annotations.get("runbook_url", "")).startswith("https://"):
                    problems.append(f"{where}: runbook_url must be an https URL")
                check_expression(where, str(rule.get("expr", "")), contract, None, problems, RULE_ONLY_METRICS)
                exprs.append(str(rule.get("expr", "")))
    check_rule_tests(alerts, problems)
    return exprs


def check_rule_tests(alerts, problems):
    fires, quiet = set(), set()
    tests_dir = RULES_DIR / "tests"
    test_files = sorted(tests_dir.glob("*.yaml")) if tests_dir.is_dir() else []
    for path in test_files:
        doc = load_yaml(path) or {}
        for test in doc.get("tests", []):
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fires.add(case.get("alertname"))
                else:
                    quiet.add(case.get("alertname"))
    for alert in sorted(alerts):
        if alert not in fires:
            problems.append(f"{alerts[alert]}: {alert} has no promtool test case where it fires")
        if alert not in quiet:
            problems.append(f"{alerts[alert]}: {alert} has no promtool test case where it must not fire")


def promtool_parse(expressions, problems):
    """Parse every expression with promtool (as recording rules), the real PromQL parser."""
    promtool = shutil.which("promtool")
    if not promtool:
        problems.append("promtool not found (apt-get install prometheus)")
        return
    rules = [{"record": f"mlkube:check:{i}", "expr": substitute(e)} for i, e in enumerate(expressions)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        # JSON is YAML: no PyYAML needed here.
        json.dump({"groups": [{"name": "dashboards", "rules": rules}]}, f)
        path = f.name
    try:
        out = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if out.returncode != 0:
            problems.append("promtool could not parse a dashboard expression:\n" + out.stdout + out.stderr)
    finally:
        Path(path).unlink()


def needs(expr):
    """What a query needs besides the serving stack: a GPU, or a running mlkube-operator."""
    found = []
    if "mlflow_system_gpu_" in expr:
        found.append("gpu")
    if "mlkube_operator_" in expr:
        found.append("operator")
    return found


def main(argv):
    contract = load_contract()
    problems = []
    boards = {}
    paths = sorted(DASHBOARD_DIR.glob("*.json"))
    if not paths:
        problems.append("deploy/dashboards/ has no dashboards")
    for path in paths:
        board = check_dashboard(path, contract, problems)
        if board is not None:
            boards[path.name] = board

    if "--list-queries" in argv:
        for file, board in boards.items():
            for title, expr in dashboard_queries(board):
                print(json.dumps({"dashboard": file, "panel": title, "expr": substitute(expr), "needs": needs(expr)}))
        return 1 if problems else 0

    # Generated and copied files are current.
    sys.path.insert(0, str(ROOT / "scripts"))
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("gen_dashboards", ROOT / "scripts" / "gen-dashboards.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    stale = gen.stale_files(gen.render())
    problems += stale
    if stale:
        problems.append("regenerate the dashboards with: python3 scripts/gen-dashboards.py")

    expressions = [e for b in boards.values() for _, e in dashboard_queries(b)]
    expressions += [variable_expr(variable_query(v)) for b in boards.values() for v in b["templating"]["list"]
                    if v.get("type") == "query"]
    rules_checked = False
    try:
        import yaml  # noqa: F401, PLC0415

        expressions += check_rules(contract, problems)
        rules_checked = True
    except ImportError:
        print("note: PyYAML missing, rules not checked (scripts/check-chart.sh runs this with it)", file=sys.stderr)

    if "--promtool" in argv:
        promtool_parse(expressions, problems)

    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    queries = sum(1 for b in boards.values() for _ in dashboard_queries(b))
    summary = f"{len(boards)} dashboards, {queries} panel queries"
    if rules_checked:
        summary += f", {len(rule_files())} rule files"
    if problems:
        print(f"check-dashboards: {len(problems)} problems ({summary})", file=sys.stderr)
        return 1
    print(f"check-dashboards: ok ({summary}; every metric in deploy/metrics-contract.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
