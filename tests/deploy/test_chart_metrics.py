"""The chart's metrics: ports, scrape annotations and the operator's port with metrics on and
off; the optional PodMonitor and PrometheusRule against a minimal schema of what we render
(the Prometheus Operator's CRDs are not available offline); the Grafana dashboard's and the
alerts' PromQL names only metrics the poller and the operator export."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from chartlib import (
    CHART,
    HELMS,
    by_kind,
    env_map,
    one,
    pod_spec,
    pollers_by_pool,
    render,
    run,
    tool,
)

ON = ("--set", "metrics.podMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true")
OFF = ("--set", "metrics.enabled=false")


def operator_of(objs) -> dict:
    (operator,) = [d for d in by_kind(objs, "Deployment")
                   if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    return operator


@pytest.mark.parametrize("scenario", ["defaults", "all"])
def test_metrics_on_by_default_ports_and_annotations(scenario):
    objs = render("helm4", scenario)
    for name, deployment in pollers_by_pool(objs).items():
        template = deployment["spec"]["template"]
        (c,) = pod_spec(deployment)["containers"]
        assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in c["ports"], name
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "8081"
        assert annotations["prometheus.io/path"] == "/metrics"
    operator = operator_of(objs)
    (c,) = pod_spec(operator)["containers"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert env_map(c)["TASK_OPERATOR_METRICS_PORT"]["value"] == "9090"
    assert operator["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    if scenario == "all":  # the chart's podAnnotations are kept beside the scrape annotations
        assert annotations["acme.invalid/team"] == "tasks"
    (dashboard,) = by_kind(objs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fullctl-tasks.json"])["uid"] == "fullctl-tasks"
    assert not [o for o in objs if o["kind"] in ("PodMonitor", "PrometheusRule")]


@pytest.mark.parametrize("helm_name", HELMS)
def test_metrics_off_renders_no_metrics(helm_name):
    objs = render(helm_name, "defaults", OFF)
    for deployment in pollers_by_pool(objs).values():
        (c,) = pod_spec(deployment)["containers"]
        assert [p["name"] for p in c["ports"]] == ["health"]
        assert "prometheus.io/scrape" not in (
            deployment["spec"]["template"]["metadata"].get("annotations") or {})
    (c,) = pod_spec(operator_of(objs))["containers"]
    assert [p["name"] for p in c["ports"]] == ["health"]
    assert env_map(c)["TASK_OPERATOR_METRICS_PORT"]["value"] == "0"  # the server stays off
    assert not by_kind(objs, "ConfigMap")
    on_but_off = render(helm_name, "defaults", (*OFF, *ON))  # the switches need metrics on
    assert not [o for o in on_but_off if o["kind"] in ("PodMonitor", "PrometheusRule")]


# -- PodMonitor and PrometheusRule --------------------------------------------------------

LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object", "required": ["name", "namespace", "labels"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                   "namespace": {"type": "string"}, "labels": LABELS},
}
DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                         "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
# the fields we render, with the types of monitoring.coreos.com/v1 (prometheus-operator's CRDs)
PODMONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}}},
                "selector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "matchLabels": LABELS,
                        "matchExpressions": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "required": ["key", "operator"],
                            "properties": {
                                "key": {"type": "string"},
                                "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                "values": {"type": "array", "items": {"type": "string"}}}}}}},
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                   "interval": DURATION}}},
            },
        },
    },
}
PROMETHEUSRULE_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"],
                 "properties": {"groups": {"type": "array", "items": {
                     "type": "object", "additionalProperties": False,
                     "required": ["name", "rules"],
                     "properties": {"name": {"type": "string", "minLength": 1}, "rules": {
                         "type": "array", "minItems": 1, "items": {
                             "type": "object", "additionalProperties": False,
                             "required": ["alert", "expr"],
                             "properties": {
                                 "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                 "expr": {"type": "string", "minLength": 1},
                                 "for": DURATION,
                                 "labels": LABELS, "annotations": LABELS}}}}}}}},
    },
}


@pytest.mark.parametrize("helm_name", HELMS)
def test_podmonitor_and_prometheusrule_validate(helm_name):
    objs = render(helm_name, "defaults", ON)
    monitor = one(objs, "PodMonitor", "fullctl-tasks")
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    rule = one(objs, "PrometheusRule", "fullctl-tasks")
    jsonschema.validate(rule, PROMETHEUSRULE_SCHEMA)
    # the PodMonitor selects exactly the poller and operator pods, on their metrics port
    selector = monitor["spec"]["selector"]
    scraped = [d for d in by_kind(objs, "Deployment")
               if selector["matchLabels"].items() <= d["spec"]["template"]["metadata"]
               ["labels"].items()
               and d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
               in selector["matchExpressions"][0]["values"]]
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in scraped} == \
        {"poller", "operator"}
    for deployment in scraped:
        (c,) = pod_spec(deployment)["containers"]
        assert "metrics" in {p["name"] for p in c["ports"]}
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "FullctlTasksBacklogGrowing", "FullctlTasksOldestPendingTooOld",
        "FullctlTasksFailureRatioHigh", "FullctlTasksStaleRunning", "FullctlTasksOperatorErrors",
    }
    assert alerts["FullctlTasksBacklogGrowing"]["for"] == "15m"
    assert alerts["FullctlTasksFailureRatioHigh"]["expr"].endswith("> 0.05")
    assert alerts["FullctlTasksOldestPendingTooOld"]["expr"].endswith("> 600")
    # Prometheus' templates survive Helm's
    assert "{{ $labels.op }}" in alerts["FullctlTasksStaleRunning"]["annotations"]["summary"]
    for expr in (r["expr"] for r in alerts.values()):
        assert_names_exported(expr)


def test_prometheusrule_thresholds_and_labels_come_from_values():
    objs = render("helm4", "defaults", (
        *ON, "--set-json", "metrics.prometheusRule.failureRatio=0.2",
        "--set", "metrics.prometheusRule.oldestPendingAgeSeconds=90",
        "--set", "metrics.podMonitor.labels.release=kube-prom",
    ))
    rule = one(objs, "PrometheusRule", "fullctl-tasks")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert alerts["FullctlTasksFailureRatioHigh"]["expr"].endswith("> 0.2")
    assert alerts["FullctlTasksOldestPendingTooOld"]["expr"].endswith("> 90")
    assert one(objs, "PodMonitor", "fullctl-tasks")["metadata"]["labels"]["release"] == "kube-prom"


@pytest.mark.parametrize(("values", "needle"), [
    ("metrics:\n  podMonitor:\n    interval: soon\n", "interval"),
    ("metrics:\n  prometheusRule:\n    failureRatio: 5\n", "failureRatio"),
    ("metrics:\n  operatorPort: 8080\n", "operatorPort"),  # the operator's liveness port
    ("metrics:\n  dashbord: {}\n", "dashbord"),
])
def test_bad_metrics_values_are_refused(values, needle, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(values)
    proc = run([tool("helm4"), "template", "x", CHART, "--values", bad], check=False)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr


# -- the dashboard ------------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name /metrics can show: the poller's collector and the operator's registry."""
    from fullctl_operator.metrics import OperatorMetrics

    from django_fullctl.poller.collector import PollerCollector, PollerNumbers
    from django_fullctl.poller.metrics import Layout

    layout = Layout(("an_op",))
    families = list(PollerCollector(layout, lambda: PollerNumbers([0.0] * layout.size, 0, 1))
                    .collect())
    families += list(OperatorMetrics().registry.collect())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    return {f.name + s for f in families for s in suffixes[f.type]}


PROMQL_WORDS = {
    # functions, aggregations and keywords the dashboard and the alerts use
    "sum", "max", "min", "avg", "count", "rate", "increase", "deriv", "histogram_quantile",
    "by", "without", "and", "or", "unless", "label_values", "humanizeDuration",
}


def assert_names_exported(expr: str) -> None:
    """Every metric an expression selects is one we export (label matchers, grouping labels,
    ranges and Grafana variables aside)."""
    exported = exported_names()
    text = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\$\w+", "", text)  # Grafana's variables
    text = re.sub(r"label_values\(([^,]*),[^)]*\)", r"\1", text)  # Grafana's label query
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text)) - PROMQL_WORDS
    assert names, expr
    unknown = names - exported
    assert not unknown, f"{expr}: {unknown} not exported"


def test_every_dashboard_expression_names_exported_metrics():
    dashboard = json.loads((CHART / "dashboards" / "fullctl-tasks.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [v["query"]["query"] for v in dashboard["templating"]["list"]
                    if v["type"] == "query"]
    assert len(expressions) >= 10
    for expr in expressions:
        assert_names_exported(expr)
    # what the issue asks the dashboard to show
    joined = "\n".join(expressions)
    for needle in ('fullctl_tasks_finished_total{outcome="completed"', "outcome=~",
                   "histogram_quantile(0.5, sum by (op, le) (rate(fullctl_task_run_duration",
                   "histogram_quantile(0.95, sum by (op, le) (rate(fullctl_task_run_duration",
                   "histogram_quantile(0.95, sum by (op, le) (rate(fullctl_task_queue_wait",
                   "fullctl_tasks{", "fullctl_task_oldest_pending_age_seconds",
                   "fullctl_operator_pool_replicas", "fullctl_tasks_stale_running",
                   "fullctl_poller_worker_restarts_total"):
        assert needle in joined, needle
    # and every metric we export is on it somewhere
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in exported_names()}
    assert {b for b in bases if b not in joined} == set()


def test_the_assertion_catches_an_unknown_metric():
    with pytest.raises(AssertionError, match="fullctl_tasks_exploded_total"):
        assert_names_exported("sum by (op) (rate(fullctl_tasks_exploded_total[5m]))")
