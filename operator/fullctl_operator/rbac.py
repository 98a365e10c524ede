"""The API calls the operator makes: what its namespaced Role grants, and nothing more.

kopf lists, watches and patches TaskPools (its finalizer), patches their status and posts
Events; the operator's own calls (``kube``) read a pool's Deployment, set its scale, and
list, annotate and delete its pods. The Helm chart's Role must equal this table: the
tests compare both with it and check every request the operator sends against it.
"""

# (apiGroup, resource) -> verbs
RULES: dict[tuple[str, str], set[str]] = {
    ("tasks.fullctl.io", "taskpools"): {"list", "watch", "patch"},
    ("tasks.fullctl.io", "taskpools/status"): {"patch"},
    ("apps", "deployments"): {"get"},
    ("apps", "deployments/scale"): {"patch"},
    ("", "pods"): {"list", "patch", "delete"},
    ("", "events"): {"create"},
}
