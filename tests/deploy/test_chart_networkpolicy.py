"""The optional NetworkPolicies (networkPolicy.enabled): read as a CNI would, they let only the
web, poller, operator, migration (and helm test) pods reach the database, and only the operator
reach the Kubernetes API server; Prometheus' scrapes of the metrics ports stay open. Rendered
with metrics and the policies on and off, and validated strictly like every other object."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from chartlib import (
    HELMS,
    KUBERNETES_VERSION,
    WORKLOAD_KINDS,
    by_kind,
    is_custom,
    pod_spec,
    render,
    validate_custom,
)

POLICY = ("--set", "networkPolicy.enabled=true")
METRICS_OFF = ("--set", "metrics.enabled=false")
PODMONITOR = ("--set", "metrics.podMonitor.enabled=true")
API_PORTS = {443, 6443}
DATABASE_CLIENTS = {"web", "poller", "operator", "migrate", "test"}


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions with In/NotIn/Exists) on ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get(
            "values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def pod_labels(objs) -> dict[str, dict]:
    """Each workload's pod labels, by its component."""
    found = {}
    for obj in objs:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        labels = obj["metadata"]["labels"] if obj["kind"] == "Pod" else \
            obj["spec"]["template"]["metadata"]["labels"]
        found.setdefault(labels["app.kubernetes.io/component"], labels)
    return found


def policies_for(objs, labels: dict, kind: str) -> list[dict]:
    return [p for p in by_kind(objs, "NetworkPolicy")
            if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)]


def egress_ports(policies: list[dict]) -> set[int | None]:
    """Every destination port the policies allow; None when a rule allows every port."""
    ports: set[int | None] = set()
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if not rule.get("ports"):
                ports.add(None)
            ports.update(p["port"] for p in rule.get("ports", []))
    return ports


def validate_all(objs) -> None:
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the PodMonitor: test_chart_metrics.py checks it against its own schema
        if is_custom(obj):
            validate_custom(obj)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("helm_name", HELMS)
def test_off_by_default(helm_name):
    assert not by_kind(render(helm_name, "defaults"), "NetworkPolicy")
    assert not by_kind(render(helm_name, "defaults", METRICS_OFF), "NetworkPolicy")


@pytest.mark.parametrize("metrics", ["on", "off", "podmonitor"])
@pytest.mark.parametrize("policy", ["on", "off"])
def test_rendered_with_metrics_and_policy_on_and_off(metrics, policy):
    extra = {"on": (), "off": METRICS_OFF, "podmonitor": PODMONITOR}[metrics]
    objs = render("helm4", "defaults", (*extra, *(POLICY if policy == "on" else ())))
    validate_all(objs)
    pods = pod_labels(objs)
    if policy == "off":
        assert not by_kind(objs, "NetworkPolicy")
        return
    assert len(by_kind(objs, "NetworkPolicy")) == 3
    # nothing restricts traffic into the web, poller and operator pods: the Service, the probes
    # and Prometheus (scrape annotations or the PodMonitor) still reach them
    for component in ("web", "poller", "operator"):
        assert not policies_for(objs, pods[component], "Ingress"), component
    if metrics != "off":
        scraped = [d for d in by_kind(objs, "Deployment")
                   if "metrics" in {p["name"] for c in pod_spec(d)["containers"]
                                    for p in c.get("ports", [])}]
        assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in scraped} == \
            {"poller", "operator"}


def test_only_the_operator_reaches_the_api_server():
    objs = render("helm4", "defaults", POLICY)
    pods = pod_labels(objs)
    assert set(pods) == DATABASE_CLIENTS | {"postgresql"}
    for component in DATABASE_CLIENTS - {"operator"}:
        policies = policies_for(objs, pods[component], "Egress")
        assert policies, f"{component} pods may open any connection"
        allowed = egress_ports(policies)
        assert None not in allowed and not allowed & API_PORTS, (component, allowed)
        assert {53, 5432} <= allowed, component
    operator = egress_ports(policies_for(objs, pods["operator"], "Egress"))
    assert operator == {53, 5432} | API_PORTS
    # and the operator is the one pod that holds a token to use there
    tokens = {d["metadata"]["labels"]["app.kubernetes.io/component"]
              for d in by_kind(objs, "Deployment") if pod_spec(d)["automountServiceAccountToken"]}
    assert tokens == {"operator"}


def test_only_the_charts_django_pods_reach_the_bundled_database():
    objs = render("helm4", "defaults", POLICY)
    pods = pod_labels(objs)
    (policy,) = policies_for(objs, pods["postgresql"], "Ingress")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    allowed = {component for component, labels in pods.items()
               if any(selects(peer["podSelector"], labels) for peer in rule["from"])}
    assert allowed == DATABASE_CLIENTS
    strangers = [{**pods["web"], "app.kubernetes.io/component": "debug"},
                 {**pods["web"], "app.kubernetes.io/instance": "another-release"}]
    for labels in strangers:
        assert not any(selects(peer["podSelector"], labels) for peer in rule["from"])
    assert all("podSelector" in peer and "namespaceSelector" not in peer
               for peer in rule["from"])
    # the Django pods' way out to it is that pod, on that port
    for component in DATABASE_CLIENTS:
        rules = [r for p in policies_for(objs, pods[component], "Egress")
                 for r in p["spec"]["egress"] if {"port": 5432, "protocol": "TCP"} in r["ports"]]
        assert rules and all(selects(r["to"][0]["podSelector"], pods["postgresql"])
                             for r in rules), component


def test_keda_may_reach_the_bundled_database_when_a_pool_uses_it():
    pools = [{"name": "default"},
             {"name": "burst", "autoscale": {"ops": ["task_sum"], "keda": {"enabled": True}}}]
    objs = render("helm4", "defaults", (*POLICY, "--set-json", f"pollers={json.dumps(pools)}"))
    validate_all(objs)
    (policy,) = policies_for(objs, pod_labels(objs)["postgresql"], "Ingress")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in peers


def test_your_database_api_server_and_dns_from_values():
    """values-all: an existing database behind ipBlock peers, the API server's address, the
    cluster's DNS pods and extra egress for the tasks."""
    objs = render("helm4", "all")
    pods = pod_labels(objs)
    assert "postgresql" not in pods  # no bundled database: no policy for it
    assert {p["metadata"]["name"] for p in by_kind(objs, "NetworkPolicy")} == \
        {"acme-tasks-egress", "acme-tasks-operator-egress"}
    (app,) = policies_for(objs, pods["poller"], "Egress")
    (operator,) = policies_for(objs, pods["operator"], "Egress")
    dns, database, *extra = app["spec"]["egress"]
    assert database == {"ports": [{"protocol": "TCP", "port": 6432}],
                        "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}]}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    # the tasks' own way out, which keeps the cluster's addresses (the API server) closed
    assert extra == [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                      "ports": [{"protocol": "TCP", "port": 443}]}]
    assert operator["spec"]["egress"] == [dns, database, {
        "ports": [{"protocol": "TCP", "port": 443}], "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}]
