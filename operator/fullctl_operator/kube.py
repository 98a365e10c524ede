"""The Kubernetes API calls the operator makes itself, and nothing else.

Every call here is one line of the Role in the Helm chart (see docs/operator.md): get a
Deployment, patch its scale, list pods, patch a pod's annotations, delete a pod. kopf
makes the TaskPool calls (list/watch/patch, status patch) and posts the events.

Credentials: the operator uses exactly what kopf logged in with (its login handlers:
in-cluster service account or kubeconfig in production, the emulator in the tests), taken
from kopf's credentials vault, so there is one login and one re-login on a 401. The
vault's context variable is the one piece of kopf's internals used; it is isolated in
``_vault()``. Plain JSON over aiohttp (kopf's own HTTP stack) keeps the objects as the
dicts the decisions read, with no model layer between the operator and the API.
"""

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

TIMEOUT = aiohttp.ClientTimeout(total=30)
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class _Session:
    """One aiohttp session per set of credentials; kopf's vault closes it on re-login."""

    def __init__(self, info: Any):
        self.owned = isinstance(info, kopf.ConnectionInfo)
        if self.owned:
            self.server = info.server.rstrip("/")
            self.proxy = info.proxy_url
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": "fullctl-operator"},
                trust_env=info.trust_env,
                timeout=TIMEOUT,
            )
        else:  # kopf.AiohttpSession: a session the login handler built itself
            self.server = info.server.rstrip("/")
            self.proxy = None
            self.session = info.aiohttp_session

    async def close(self) -> None:
        if self.owned:
            await self.session.close()


def _vault():
    from kopf._cogs.clients.auth import vault_var

    return vault_var.get()


async def request(
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str = MERGE_PATCH,
) -> Any:
    """One API call; returns the decoded JSON answer. Retries once per re-login on a 401."""
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": content_type} if body is not None else {}
    vault = _vault()
    async for key, info, session in vault.extended(_Session, "fullctl-operator"):
        try:
            async with session.session.request(
                method, session.server + path, params=params, data=data, headers=headers,
                proxy=session.proxy,
            ) as response:
                text = await response.text()
                if response.status == 401:
                    await vault.invalidate(key, info, exc=KubeError(401, text[:200]))
                    continue
                if response.status >= 400:
                    raise KubeError(response.status, _message(text))
                return json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise KubeError(0, f"{method} {path}: {exc}") from exc
    raise KubeError(401, "no valid credentials")


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]


def _deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(name)}"


def _pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}"


async def get_deployment(namespace: str, name: str) -> dict | None:
    """deployments get. None when it does not exist."""
    try:
        return await request("GET", _deployment_path(namespace, name))
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


async def patch_scale(namespace: str, name: str, replicas: int) -> None:
    """deployments/scale patch: only the replica count, nothing else of the Deployment."""
    await request(
        "PATCH", _deployment_path(namespace, name) + "/scale", body={"spec": {"replicas": replicas}}
    )


async def list_pods(namespace: str, label_selector: str) -> list[dict]:
    """pods list, narrowed by the Deployment's selector (callers filter again)."""
    params = {"labelSelector": label_selector} if label_selector else None
    answer = await request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods", params=params)
    return list((answer or {}).get("items") or [])


async def annotate_pod(namespace: str, name: str, annotations: Mapping[str, str]) -> bool:
    """pods patch: a merge patch of annotations only. False if the pod was gone."""
    try:
        await request(
            "PATCH", _pod_path(namespace, name),
            body={"metadata": {"annotations": dict(annotations)}},
        )
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def delete_pod(namespace: str, name: str) -> bool:
    """pods delete with the pod's own grace period (no override). False if it was gone."""
    try:
        await request("DELETE", _pod_path(namespace, name))
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True
