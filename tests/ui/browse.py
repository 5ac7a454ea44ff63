"""Open MLflow's web UI in headless Chromium and check each page an MLflow user opens.

Run with the Python of the ui-browser venv (Playwright's driver; see scripts/lib/ui.sh):

    .cache/venvs/ui-browser/bin/python tests/ui/browse.py --base-url URL --fixture fixture.json \
        --label upstream-3.17.2 --out target/ui-test/upstream-3.17.2

--fixture is what tests/ui/fill.py wrote. For every page it loads the UI's hash route, waits until the
texts we logged are on screen (clicking through the artifact tree where needed), records every request
the page made (through a recording proxy in front of the server, recording_proxy.py), saves a
screenshot, and fails the page on a missing text, a response with status >= 400, a failed request or an
uncaught JavaScript error, unless the request is on ALLOWED below.

Besides the screenshots, --out receives requests.jsonl (every request with its page, its body and, up
to 64 KiB, its JSON answer, so that two servers can be diffed), routes.txt (the distinct
METHOD /path?query-names patterns), graphql-queries.txt (the distinct GraphQL documents the UI posted)
and results.json. Prints one line per page and `N passed, N failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from recording_proxy import RecordingProxy

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
_JSON_KEEP = 64 * 1024  # largest JSON response body kept in requests.jsonl


# === The allow-list ===


@dataclass(frozen=True)
class Allowed:
    method: str
    path: re.Pattern
    status: int
    why: str


# Responses that may fail without failing the page, per UI version (prefix match on the version).
# Only features that upstream `mlflow server` itself documents as absent belong here.
ALLOWED: dict[str, list[Allowed]] = {
    "2.": [],
    "3.": [
        # The 3.x UI asks who is signed in on every page. MLflow registers this route only in the
        # basic-auth app (`--app-name basic-auth`, mlflow/server/auth/routes.py); a plain server
        # answers 404 and the UI then shows no user menu.
        Allowed("GET", re.compile(r"^/ajax-api/2\.0/mlflow/users/current$"), 404, "auth app only"),
    ],
}


def allowed_failure(version: str, method: str, path: str, status: int | None) -> Allowed | None:
    for prefix, entries in ALLOWED.items():
        if not version.startswith(prefix):
            continue
        for entry in entries:
            if entry.method == method and entry.status == status and entry.path.search(path):
                return entry
    return None


# === Pages ===


@dataclass
class Step:
    """Click the element whose whole text is `click` (if set), then wait for every text in `expect`."""

    expect: list[str]
    click: str | None = None


@dataclass
class PageCheck:
    name: str
    route: str  # hash route, without the leading '#'
    steps: list[Step]
    # Extra checks on the JSON the page received: (description, function(responses) -> error or None).
    response_checks: list = field(default_factory=list)


def metric_history_check(run_id: str, metric: str, values: list[float]):
    """The chart's data: the page must have fetched the whole series of `metric` for `run_id`."""

    def check(responses: list[dict]) -> str | None:
        seen = []
        for resp in responses:
            path = urlsplit(resp["url"]).path
            if not re.search(r"/metrics/get-history(-bulk-interval|-bulk)?$", path):
                continue
            query = dict(parse_qsl(urlsplit(resp["url"]).query))
            if query.get("metric_key") != metric or run_id not in resp["url"]:
                continue
            body = resp.get("json") or {}
            points = [m for m in body.get("metrics", []) if m.get("run_id", run_id) == run_id]
            points.sort(key=lambda m: (m.get("step", 0), m.get("timestamp", 0)))
            seen = [m.get("value") for m in points]
            if seen == values:
                return None
        return f"no metric-history response for {metric} of {run_id} with the logged values (last seen {seen})"

    return (f"history of {metric}", check)


def build_pages(fx: dict, version: str) -> list[PageCheck]:
    f = fx["fixture"]
    major = int(version.split(".")[0])
    exp = fx["experiment_id"]
    (run1, run2) = fx["runs"]
    spec1, spec2 = f["runs"]
    r1 = run1["id"]
    model = quote(f["model_name"], safe="")
    mv = fx["model_version"]
    alias = f["model_alias"]
    art_dir, art_file = f["artifact_path"].rsplit("/", 1)
    metric = f["metric"]
    final1 = fx["metric_values"][spec1["name"]][-1]

    pages = [
        # 2.x has no experiment list page of its own: the home page lists experiments in a sidebar.
        PageCheck(
            "experiment-list",
            "/" if major == 2 else "/experiments",
            [Step([f["experiment"]] + ([] if major == 2 else list(f["experiment_tags"].values())))],
        ),
        # 3.x opens an experiment on its GenAI overview; the training-runs table has its own route.
        PageCheck(
            "runs-table",
            f"/experiments/{exp}" if major == 2 else f"/experiments/{exp}/runs",
            [Step([run1["name"], run2["name"], f["model_name"], "2 matching runs"])],
        ),
        # The same page in chart mode: one chart per metric over both runs (bars show two decimals).
        PageCheck(
            "runs-charts",
            (f"/experiments/{exp}" if major == 2 else f"/experiments/{exp}/runs") + "?compareRunsMode=CHART",
            [Step([run1["name"], run2["name"], metric, "accuracy", "Step"]
                  + [f"{spec1['accuracy']:.2f}", f"{spec2['accuracy']:.2f}"])],
            [
                metric_history_check(run1["id"], metric, fx["metric_values"][spec1["name"]]),
                metric_history_check(run2["id"], metric, fx["metric_values"][spec2["name"]]),
            ],
        ),
        PageCheck(
            "run-overview",
            f"/experiments/{exp}/runs/{r1}",
            [
                Step(
                    [run1["name"], r1, metric, str(final1), "accuracy", str(spec1["accuracy"])]
                    + [s for kv in spec1["params"].items() for s in kv]
                    + [s for kv in spec1["tags"].items() for s in kv]
                    + [f["model_name"]]
                )
            ],
        ),
        PageCheck(
            "run-metric-charts",
            f"/experiments/{exp}/runs/{r1}/model-metrics",
            [Step([metric, "accuracy", f"{run1['name']} ({metric})", "Step"])],
            [metric_history_check(r1, metric, fx["metric_values"][spec1["name"]])],
        ),
    ]

    # The run's artifact tree: open the text file, then (2.x, where the model lives in the run) MLmodel.
    artifact_steps = [
        Step([art_dir], None),
        Step([art_file], click=art_dir),
        Step([f["artifact_text"]], click=art_file),
    ]
    if major == 2:
        artifact_steps.append(Step(["flavors:", "sklearn_version", "artifact_path: model"], click="MLmodel"))
    pages.append(PageCheck("run-artifacts", f"/experiments/{exp}/runs/{r1}/artifacts", artifact_steps))

    if major >= 3:
        # MLflow 3 stores a logged model beside the run, under its own id, with its own pages.
        mid = fx["logged_model_id"]
        pages.append(
            PageCheck(
                "logged-model",
                f"/experiments/{exp}/models/{mid}",
                [Step([mid, run1["name"], "alpha", "0.125", metric, f["model_name"]])],
            )
        )
        pages.append(
            PageCheck(
                "logged-model-artifacts",
                f"/experiments/{exp}/models/{mid}/artifacts",
                [
                    Step(["MLmodel", "requirements.txt"]),
                    Step(["flavors:", "sklearn_version", mid], click="MLmodel"),
                ],
            )
        )

    compare_runs = json.dumps([run1["id"], run2["id"]], separators=(",", ":"))
    compare_exps = json.dumps([exp], separators=(",", ":"))
    pages += [
        PageCheck(
            "compare-runs",
            f"/compare-runs?runs={compare_runs}&experiments={compare_exps}",
            [
                Step(
                    ["Comparing 2 Runs", run1["name"], run2["name"], run1["id"], run2["id"]]
                    + list(spec1["params"].values())
                    + list(spec2["params"].values())
                    # The comparison table rounds metrics to three decimals.
                    + [f"{spec1['final']:.3f}", f"{spec2['final']:.3f}"]
                    + [spec1["tags"]["team"], spec2["tags"]["team"]]
                )
            ],
        ),
        PageCheck(
            "registered-models",
            "/models",
            [Step([f["model_name"], f"Version {mv}", alias])],
        ),
        PageCheck(
            "registered-model",
            f"/models/{model}",
            [Step([f["model_name"], f"Version {mv}", alias, f["model_description"][:24]])],
        ),
        PageCheck(
            "model-version",
            f"/models/{model}/versions/{mv}",
            [
                Step(
                    [f["model_name"], f"Version {mv}", alias, run1["name"], f["model_description"]]
                    # The schema section is filled from the version's MLmodel file.
                    + ["Inputs (2)", "Outputs (1)"]
                )
            ],
        ),
    ]
    return pages


# === Recording ===


class BrowserEvents:
    """What only the browser knows: network errors, requests to other origins, JavaScript errors.

    Status codes and bodies of requests to the server come from the recording proxy instead, which
    also sees requests made by workers (Playwright's page events do not).
    """

    def __init__(self, page, proxy_origin: str):
        self.proxy_origin = proxy_origin
        self.records: list[dict] = []
        self.page_errors: list[str] = []
        page.on("requestfailed", self._on_failed)
        page.on("requestfinished", self._on_finished)
        page.on("pageerror", self._on_page_error)

    def _on_page_error(self, err) -> None:
        # Minified bundles throw terse messages; the first stack frame says where.
        stack = [line.strip() for line in (err.stack or "").splitlines()[1:2]]
        self.page_errors.append(" ".join([f"{err.name or 'Error'}: {err.message}"] + stack))

    def _ours(self, url: str) -> bool:
        return url.startswith(self.proxy_origin + "/") or url == self.proxy_origin

    def _on_failed(self, request):
        if urlsplit(request.url).scheme not in ("http", "https"):
            return
        self.records.append({
            "method": request.method,
            "url": request.url,
            "status": None,
            "error": request.failure or "failed",
            "post_data": None,
            "source": "browser",
        })

    def _on_finished(self, request):
        # Requests that reached the proxy are already in its log; keep the other origins here.
        if self._ours(request.url) or urlsplit(request.url).scheme not in ("http", "https"):
            return
        response = request.response()
        self.records.append({
            "method": request.method,
            "url": request.url,
            "status": response.status if response else None,
            "error": None,
            "post_data": None,
            "source": "browser",
        })


def settle(page, proxy: RecordingProxy, quiet_s: float = 0.8, max_s: float = 8.0) -> None:
    """Wait until no request to the server has been open for `quiet_s` (at most `max_s`)."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and proxy.idle_for() < quiet_s:
        page.wait_for_timeout(100)


def request_problems(version: str, origin: str, records: list[dict]) -> tuple[list[str], list[str]]:
    """(failures, tolerated) as printable lines."""
    failures, tolerated = [], []
    for rec in records:
        split = urlsplit(rec["url"])
        path = split.path
        where = split.path + (f"?{split.query}" if split.query else "")
        if f"{split.scheme}://{split.netloc}" != origin:
            where = rec["url"]
        error = rec.get("error")
        if rec["source"] == "browser" and error is not None:
            # The UI cancels requests it no longer needs (a new click, an unmounted component); the
            # proxy still records how the server answered them.
            if "ERR_ABORTED" in error:
                tolerated.append(f"{rec['method']} {where}: cancelled by the page")
            else:
                failures.append(f"{rec['method']} {where}: request failed ({error})")
            continue
        status = rec["status"]
        if error is not None:
            failures.append(f"{rec['method']} {where}: {error}")
        elif status is not None and status >= 400:
            entry = allowed_failure(version, rec["method"], path, status)
            if entry is not None:
                tolerated.append(f"{rec['method']} {where}: {status} (allowed: {entry.why})")
            else:
                failures.append(f"{rec['method']} {where}: HTTP {status}")
    return failures, tolerated


def route_pattern(rec: dict, fx: dict) -> str:
    """METHOD /path?names with our ids replaced by placeholders, for the list of routes the UI used."""
    split = urlsplit(rec["url"])
    path = split.path
    if path.startswith("/static-files/"):
        # Content-hashed bundle files: one line per folder and extension is enough.
        path = re.sub(r"/[^/]*?(\.[A-Za-z0-9]+)?$", lambda m: "/*" + (m.group(1) or ""), path)
    subst = {fx["experiment_id"]: "{experiment_id}", fx["fixture"]["model_name"]: "{model_name}"}
    for run in fx["runs"]:
        subst[run["id"]] = "{run_id}"
    if fx.get("logged_model_id"):
        subst[fx["logged_model_id"]] = "{model_id}"
    segments = [subst.get(seg, seg) for seg in path.split("/")]
    names = sorted({name for name, _ in parse_qsl(split.query, keep_blank_values=True)})
    query = "?" + "&".join(names) if names else ""
    return f"{rec['method']} {'/'.join(segments)}{query}"


def graphql_documents(records: list[dict]) -> dict[str, str]:
    """operationName -> query text of every GraphQL POST."""
    docs = {}
    for rec in records:
        if rec["method"] != "POST" or not urlsplit(rec["url"]).path.endswith("/graphql"):
            continue
        try:
            body = json.loads(rec["post_data"] or "")
        except ValueError:
            continue
        for item in body if isinstance(body, list) else [body]:
            query = item.get("query") if isinstance(item, dict) else None
            if query:
                docs[item.get("operationName") or query.split("{", 1)[0].strip()] = query
    return docs


# === Running one page ===


def missing_texts(page, texts: list[str]) -> list[str]:
    body = page.evaluate("() => document.body ? document.body.innerText : ''")
    return [t for t in texts if t not in body]


def wait_for_texts(page, texts: list[str], timeout_ms: int) -> list[str]:
    """Wait until all texts are visible in the page; returns those still missing at the timeout."""
    try:
        page.wait_for_function(
            "texts => document.body && texts.every(t => document.body.innerText.includes(t))",
            arg=texts,
            timeout=timeout_ms,
            polling=250,
        )
        return []
    except PlaywrightTimeout:
        return missing_texts(page, texts)


def click_text(page, text: str, timeout_ms: int) -> None:
    """Click the first visible element whose whole text is `text`."""
    page.get_by_text(text, exact=True).locator("visible=true").first.click(timeout=timeout_ms)


def run_page(context, proxy: RecordingProxy, check: PageCheck, version: str, out_dir: str, timeout_ms: int):
    page = context.new_page()
    events = BrowserEvents(page, proxy.origin)
    url = f"{proxy.origin}/#{check.route}"
    problems: list[str] = []
    started = time.monotonic()
    first = proxy.mark()
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
        for step in check.steps:
            if step.click is not None:
                try:
                    click_text(page, step.click, timeout_ms)
                except (PlaywrightTimeout, PlaywrightError) as err:
                    problems.append(f"could not click {step.click!r}: {str(err).splitlines()[0]}")
                    break
            missing = wait_for_texts(page, step.expect, timeout_ms)
            if missing:
                problems.append("missing text: " + ", ".join(repr(t) for t in missing))
                break
        settle(page, proxy)
    except (PlaywrightTimeout, PlaywrightError) as err:
        problems.append(f"browser error: {str(err).splitlines()[0]}")
    try:
        page.screenshot(path=os.path.join(out_dir, f"{check.name}.png"), timeout=timeout_ms)
    except (PlaywrightTimeout, PlaywrightError) as err:
        problems.append(f"no screenshot: {str(err).splitlines()[0]}")
    page.close()
    records = [dict(r, source="server") for r in proxy.slice(first)] + events.records

    failures, tolerated = request_problems(version, proxy.origin, records)
    problems += failures
    problems += [f"uncaught JavaScript error: {e}" for e in events.page_errors]
    for description, check_fn in check.response_checks:
        error = check_fn([r for r in records if r["status"] == 200])
        if error:
            problems.append(f"{description}: {error}")
    return {
        "page": check.name,
        "route": "#" + check.route,
        "seconds": round(time.monotonic() - started, 1),
        "ok": not problems,
        "problems": problems,
        "tolerated": tolerated,
        "requests": records,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the tracking server, http://127.0.0.1:PORT")
    parser.add_argument("--fixture", required=True, help="JSON written by fill.py")
    parser.add_argument("--label", required=True, help="name for the output lines, e.g. upstream-3.17.2")
    parser.add_argument("--out", required=True, help="directory for screenshots and request logs")
    parser.add_argument("--chromium", default=os.environ.get("MLKUBE_UI_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("MLKUBE_UI_TIMEOUT", "30")),
                        help="seconds to wait for a page's texts (default 30, env MLKUBE_UI_TIMEOUT)")
    parser.add_argument("--only", action="append", help="run only this page (repeatable)")
    args = parser.parse_args()

    with open(args.fixture, encoding="utf-8") as fh:
        fx = json.load(fh)
    version = fx["mlflow_version"]
    os.makedirs(args.out, exist_ok=True)
    timeout_ms = int(args.timeout * 1000)
    pages = [p for p in build_pages(fx, version) if not args.only or p.name in args.only]

    results = []
    with RecordingProxy(args.base_url.rstrip("/")) as proxy, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US", timezone_id="UTC")
        for check in pages:
            try:
                result = run_page(context, proxy, check, version, args.out, timeout_ms)
            except Exception:  # noqa: BLE001 - one broken page must not hide the others
                result = {"page": check.name, "route": "#" + check.route, "seconds": 0, "ok": False,
                          "problems": ["test error: " + traceback.format_exc(limit=3)], "tolerated": [],
                          "requests": []}
            results.append(result)
            status = "PASS" if result["ok"] else "FAIL"
            print(f"{status}  {args.label} {result['page']} ({result['seconds']}s)  {result['route']}", flush=True)
            for line in result["problems"]:
                print(f"        {line}", flush=True)
        context.close()
        browser.close()

    write_outputs(args.out, results, fx)
    passed = sum(1 for r in results if r["ok"])
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def write_outputs(out: str, results: list[dict], fx: dict) -> None:
    all_records = []
    with open(os.path.join(out, "requests.jsonl"), "w", encoding="utf-8") as fh:
        for result in results:
            for rec in result["requests"]:
                row = {"page": result["page"], **{k: v for k, v in rec.items() if k != "json"}}
                # JSON answers, to diff one server against another; big ones are only sized.
                if rec.get("json") is not None:
                    body = json.dumps(rec["json"])
                    row["response_json" if len(body) <= _JSON_KEEP else "response_json_bytes"] = (
                        rec["json"] if len(body) <= _JSON_KEEP else len(body))
                fh.write(json.dumps(row) + "\n")
                all_records.append(rec)
    routes = sorted({route_pattern(rec, fx) for rec in all_records})
    with open(os.path.join(out, "routes.txt"), "w", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in routes))
    docs = graphql_documents(all_records)
    with open(os.path.join(out, "graphql-queries.txt"), "w", encoding="utf-8") as fh:
        if docs:
            fh.write("# The distinct GraphQL documents the UI posted to /graphql, by operation name\n"
                     "# (written by tests/ui/browse.py).\n\n")
        for name in sorted(docs):
            fh.write(f"# operationName: {name}\n{docs[name].strip()}\n\n")
    summary = [{k: v for k, v in r.items() if k != "requests"} for r in results]
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
