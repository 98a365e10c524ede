"""The Kubernetes API calls the operator makes itself, and nothing else.

Every call here is one line of the Role in the Helm chart (see docs/operator.md): get a
Deployment, patch its scale, list pods, patch a pod's annotations, delete a pod. kopf
makes the TaskPool calls (list/watch/patch, status patch) and posts the events.

The client is the official ``kubernetes.aio``, configured the way kopf's default login
configures the ``kubernetes`` client: the pod's service account, else the kubeconfig
(``KUBECONFIG`` or ``~/.kube/config``); a 401 loads the configuration again, once. The
generated ``*_without_preload_content`` methods are used: the answers stay the JSON the
API server sent, the plain dicts that ``observe`` reads, with no model layer between.
"""

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Self

from kubernetes.aio import config
from kubernetes.aio.client import ApiClient, ApiException, AppsV1Api, Configuration, CoreV1Api
from kubernetes.aio.client.rest import RESTResponseType

TIMEOUT = 30.0  # seconds, for one request
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "fullctl-operator"


async def load_configuration() -> Configuration:
    """In a pod its service account, elsewhere the kubeconfig: as kopf's default login."""
    configuration = Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    return configuration


async def new_api_client() -> ApiClient:
    api = ApiClient(await load_configuration())
    api.user_agent = USER_AGENT
    return api


class Cluster:
    """The operator's API client: made at startup, closed at cleanup (``handlers``)."""

    def __init__(self, api: ApiClient):
        self._api = api
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls) -> Self:
        return cls(await new_api_client())

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, api_class: type, method: str, *args: Any, missing_ok: bool = False,
                    **kwargs: Any) -> Any:
        """``api_class(client).<method>_without_preload_content(*args, **kwargs)``, decoded.

        A 404 gives None with ``missing_ok``; another error status raises ``ApiException``.
        On a 401 the configuration is loaded again (a rotated token) and the call retried.
        """
        async def send(api: ApiClient) -> tuple[RESTResponseType, str]:
            call = getattr(api_class(api), f"{method}_without_preload_content")
            async with await call(*args, _request_timeout=TIMEOUT, **kwargs) as response:
                return response, await response.text()

        api = self._api
        response, text = await send(api)
        if response.status == 401:
            await self._reconnect(api)
            response, text = await send(self._api)
        if response.status == 404 and missing_ok:
            return None
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.reason, body=text)
        return json.loads(text) if text else {}

    async def _reconnect(self, failed: ApiClient) -> None:
        """A new client from a fresh configuration, unless another call already made one."""
        async with self._lock:
            if self._api is failed:
                self._api = await new_api_client()
                await failed.close()

    async def get_deployment(self, namespace: str, name: str) -> dict | None:
        """deployments get. None when it does not exist."""
        return await self._call(
            AppsV1Api, "read_namespaced_deployment", name, namespace, missing_ok=True
        )

    async def patch_scale(self, namespace: str, name: str, replicas: int) -> None:
        """deployments/scale patch: only the replica count, nothing else of the Deployment."""
        await self._call(
            AppsV1Api, "patch_namespaced_deployment_scale", name, namespace,
            {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH,
        )

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict]:
        """pods list, narrowed by the Deployment's selector (callers filter again)."""
        answer = await self._call(
            CoreV1Api, "list_namespaced_pod", namespace, label_selector=label_selector or None
        )
        return list(answer.get("items") or [])

    async def annotate_pod(self, namespace: str, name: str,
                           annotations: Mapping[str, str]) -> bool:
        """pods patch: a merge patch of annotations only. False if the pod was gone."""
        answer = await self._call(
            CoreV1Api, "patch_namespaced_pod", name, namespace,
            {"metadata": {"annotations": dict(annotations)}}, _content_type=MERGE_PATCH,
            missing_ok=True,
        )
        return answer is not None

    async def delete_pod(self, namespace: str, name: str) -> bool:
        """pods delete with the pod's own grace period (no body). False if it was gone."""
        answer = await self._call(CoreV1Api, "delete_namespaced_pod", name, namespace,
                                  missing_ok=True)
        return answer is not None
